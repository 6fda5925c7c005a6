"""Samplers, the training loss and the CFG sampling loop's seeding contract."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from busgen.model import diffusion, unet


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return unet.build_model(unet.model_config_for("tiny"), num_labels=3, num_domains=2).eval()


def _conds(n, size=32):
    boxes = [[0.2, 0.2, 0.6, 0.6] if i % 2 == 0 else None for i in range(n)]
    return [i % 3 for i in range(n)], [i % 2 for i in range(n)], torch.from_numpy(unet.rasterize_boxes(boxes, size))


def test_make_sampler_kinds():
    cfg = diffusion.DiffusionConfig()
    assert isinstance(diffusion.make_sampler(cfg, "ddpm"), DDPMScheduler)
    assert isinstance(diffusion.make_sampler(cfg, "ddim"), DDIMScheduler)
    dpm = diffusion.make_sampler(cfg, "dpmpp")
    assert isinstance(dpm, DPMSolverMultistepScheduler) and dpm.config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match="unknown sampler"):
        diffusion.make_sampler(cfg, "euler")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_targets(tiny, prediction_type):
    """A model that outputs the exact target has zero loss: checks which target each mode uses."""
    sched = diffusion.make_noise_scheduler(diffusion.DiffusionConfig(prediction_type=prediction_type))
    x0 = torch.rand(2, 1, 32, 32) * 2 - 1
    noise, t = torch.randn_like(x0), torch.tensor([10, 700])
    target = noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
    oracle = lambda *a: target  # noqa: E731
    loss = diffusion.diffusion_loss(oracle, sched, x0, None, None, None, noise=noise, timesteps=t)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    labels, domains, mask = _conds(2)
    real = diffusion.diffusion_loss(
        tiny, sched, x0, torch.tensor(labels), torch.tensor(domains), mask, noise=noise, timesteps=t
    )
    assert real.item() > 0.01


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_per_image_seeds_independent_of_batch(tiny, sampler):
    labels, domains, mask = _conds(4)
    cfg = diffusion.DiffusionConfig()
    full = diffusion.sample(tiny, cfg, labels, domains, mask, steps=4, seeds=[10, 11, 12, 13], sampler=sampler)
    again = diffusion.sample(tiny, cfg, labels, domains, mask, steps=4, seeds=[10, 11, 12, 13], sampler=sampler)
    assert torch.equal(full, again)
    # image 2 alone, and image 2 in another batch, match its place in the full batch
    alone = diffusion.sample(tiny, cfg, labels[2:3], domains[2:3], mask[2:3], steps=4, seeds=[12], sampler=sampler)
    mixed = diffusion.sample(
        tiny,
        cfg,
        [labels[2], 0],
        [domains[2], 1],
        torch.cat([mask[2:3], mask[1:2]]),
        steps=4,
        seeds=[12, 99],
        sampler=sampler,
    )
    for other in (alone[0], mixed[0]):
        assert (other - full[2]).abs().max() * 127.5 <= 2.0
    assert (full[0] - full[1]).abs().mean() > 0.05


class _NearOracle(torch.nn.Module):
    """Predicts the noise of a one-image data distribution {c}, 1% off: a well-trained model's error."""

    null_label, null_domain = 3, 2

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c
        self.alphas_cumprod = diffusion.make_noise_scheduler(diffusion.DiffusionConfig()).alphas_cumprod
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # sample() reads device and dtype from a parameter

    def forward(self, x, t, labels, domains, box_mask):
        ab = self.alphas_cumprod[int(t)]
        eps = (x - ab.sqrt() * self.c) / (1 - ab).sqrt()
        return eps * 1.01


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
@pytest.mark.parametrize("steps", [5, 25])
def test_every_sampler_lands_on_the_data_despite_small_prediction_error(sampler, steps):
    """At the first trailing step alpha ~ 5e-5: an x0 estimate that is not kept in [-1, 1] blows up 1% errors."""
    c = torch.linspace(-0.8, 0.8, 64).reshape(1, 1, 8, 8)
    labels, domains, mask = [0, 1], [0, 1], torch.zeros(2, 1, 8, 8)
    out = diffusion.sample(
        _NearOracle(c),
        diffusion.DiffusionConfig(),
        labels,
        domains,
        mask,
        steps=steps,
        guidance=1.0,
        seeds=[1, 2],
        sampler=sampler,
    )
    assert (out - c).abs().mean() < 0.1, (out - c).abs().mean()


def test_guidance_uses_unconditional_branch(tiny):
    labels, domains, mask = _conds(2)
    cfg = diffusion.DiffusionConfig()
    cond_only = diffusion.sample(tiny, cfg, labels, domains, mask, steps=3, guidance=1.0, seeds=[1, 2])
    guided = diffusion.sample(tiny, cfg, labels, domains, mask, steps=3, guidance=3.0, seeds=[1, 2])
    assert not torch.allclose(cond_only, guided)
    assert guided.min() >= -1 and guided.max() <= 1


def test_sample_validates_lengths(tiny):
    labels, domains, mask = _conds(2)
    with pytest.raises(ValueError, match="one seed"):
        diffusion.sample(tiny, diffusion.DiffusionConfig(), labels, domains, mask, steps=2, seeds=[1])
