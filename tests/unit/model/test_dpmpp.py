"""DPM-Solver++ on the capped cosine schedule: at least DDIM's quality at equal steps, and a sane first step.

Spec: at 20 steps on a trained phantom model, DPM-Solver++'s FID against held-out phantom images
is at most DDIM's (within a tolerance set by DDIM's own seed-to-seed spread); its first x0
prediction is finite and bounded (the cosine schedule's last timestep has alpha ~ 5e-5 and made it
~1e4 before it was skipped); ``steps`` asked is ``steps`` model evaluations.
"""

from __future__ import annotations

import math

import pytest
import torch

from busgen.model import diffusion, generator

CLASSES = ("benign", "malignant", "normal")
SIZE = 16
# DDIM's FID at 20 steps over three sampling seeds and 48 or 96 images (this model and encoder) spread by
# +-7 % around its mean (1.47 / 1.48 / 1.53 / 1.64 e-3); DPM-Solver++ measured 24-37 % below it. 10 % of slack
# is above that spread and far below the gap the bug made (DPM-Solver++ was 7-8x DDIM's FID).
FID_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def trained():
    """The tiny preset trained 120 steps on 16 px phantoms (seconds on one thread), loaded as a Generator."""
    import tempfile

    from busgen.testing.training import train_phantom_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as d:
            yield generator.load(train_phantom_model(f"{d}/m", size=SIZE, steps=120), device="cpu")
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fid(trained):
    """``fid(sampler, steps)``: FID of 48 samples (seed 1000) against 96 held-out phantoms, copy-encoder features."""
    from busgen.data.phantom import make_phantom_arrays
    from busgen.measure.fidelity import frechet_distance
    from busgen.measure.privacy.encoder import encode, train_copy_encoder

    real, _, _ = make_phantom_arrays(96, SIZE, seed=11)  # held out: training used seed 0
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = train_copy_encoder(real, epochs=5, seed=0)
    finally:
        torch.set_num_threads(n)
    real_feats, cache = encode(encoder, real), {}

    def of(sampler: str, steps: int) -> float:
        if (sampler, steps) not in cache:
            images = trained.sample(list(CLASSES) * 16, steps=steps, seed=1000, sampler=sampler)
            cache[sampler, steps] = frechet_distance(encode(encoder, images), real_feats)
        return cache[sampler, steps]

    return of


def test_dpm_solver_pp_matches_or_beats_ddim_fid_at_20_steps_on_a_trained_phantom_model(fid, torch_one_thread):
    assert fid("dpmpp", 20) <= fid("ddim", 20) * (1 + FID_TOLERANCE), (fid("dpmpp", 20), fid("ddim", 20))


def test_dpm_solver_pp_needs_half_the_steps_of_ddim_for_the_same_fid(fid, torch_one_thread):
    """Measured: DPM-Solver++ at 10 steps is 16-32 % below DDIM's FID at 20 (two seeds, 96 images)."""
    assert fid("dpmpp", 10) <= fid("ddim", 20) * (1 + FID_TOLERANCE), (fid("dpmpp", 10), fid("ddim", 20))


def test_dpm_solver_pp_first_x0_prediction_is_finite_and_bounded(trained):
    """The planted check: x0 = (x - sigma eps) / alpha at the first step stays near the image range."""
    seen = []

    def record(x, t, pred):
        seen.append((x.clone(), int(t), pred.clone()))
        return pred

    n = 6
    labels = trained.label_indices(list(CLASSES) * 2)
    diffusion.sample(
        trained.model, trained.diffusion_cfg, labels, [0] * n, torch.zeros(n, 1, SIZE, SIZE), steps=20,
        seeds=range(n), sampler="dpmpp", extra_guidance=record,
    )  # fmt: skip
    x, t, eps = seen[0]
    alpha_bar = diffusion.make_noise_scheduler(trained.diffusion_cfg).alphas_cumprod[t]
    x0 = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    assert torch.isfinite(x0).all()
    assert x0.abs().max() < 10, (t, float(x0.abs().max()))  # ~1e4 when the first step was t = 999


@pytest.mark.parametrize("steps", [1, 5, 10, 20, 25, 50])
def test_dpm_solver_pp_starts_at_a_clipped_log_snr_and_runs_exactly_the_steps_asked(steps):
    sched = diffusion.make_sampler(diffusion.DiffusionConfig(), "dpmpp")
    sched.set_timesteps(steps)
    ts = sched.timesteps.tolist()
    assert len(ts) == steps and ts == sorted(set(ts), reverse=True)
    first = sched.lambda_t[ts[0]]
    assert first >= diffusion.DPMPP_LAMBDA_MIN and sched.lambda_t[ts[0] + 1] < diffusion.DPMPP_LAMBDA_MIN
    assert ts[-1] <= math.ceil(1000 / steps)  # ends near the data, like trailing spacing
