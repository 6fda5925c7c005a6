"""The library-backed metrics give the numbers of the hand-written versions they replaced, on fixed inputs.

MS-SSIM is torchmetrics', ECE torchmetrics' calibration error, FID torchmetrics'
``FrechetInceptionDistance`` and each KID subset its ``poly_mmd``, bootstrap CIs
``scipy.stats.bootstrap`` (paired). The former implementations are kept here, frozen,
as the reference. PRDC stays on faiss and is checked against the ``prdc`` package.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from busgen.measure import fidelity, metrics

# ----------------------------------------------------------------------------- the former implementations


def ref_frechet_distance(a, b, eps=1e-6):
    import warnings

    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real))


def ref_kid(a, b, n_subsets=100, subset_size=1000, seed=0):
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    values = []
    for _ in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def ref_ece(y_true, probs, n_bins=15):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    bin_ids = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bin_ids == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def ref_bootstrap_ci(metric_fn, y_true, y_score, n_boot=1000, alpha=0.05, seed=0):
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    point = float(metric_fn(y_true, y_score))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y_true), len(y_true))
        try:
            value = float(metric_fn(y_true[idx], y_score[idx]))
        except ValueError:
            continue
        if np.isfinite(value):
            stats.append(value)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def ref_ms_ssim(a, b, scales=3, data_range=255.0, win_size=7, sigma=1.5):
    def window(size):
        t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(t**2) / (2 * sigma**2))
        g = g / g.sum()
        return (g[:, None] * g[None, :]).view(1, 1, size, size)

    def ssim_cs(x, y, win):
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
        sxx, syy = F.conv2d(x * x, win) - mu_x**2, F.conv2d(y * y, win) - mu_y**2
        sxy = F.conv2d(x * y, win) - mu_x * mu_y
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))

    x = torch.as_tensor(a, dtype=torch.float64).unsqueeze(1)
    y = torch.as_tensor(b, dtype=torch.float64).unsqueeze(1)
    coarsest = min(x.shape[-2:]) // 2 ** (scales - 1)
    win = window(min(win_size, coarsest - (1 - coarsest % 2)))
    w = torch.tensor(fidelity.MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    w = w / w.sum()
    out = torch.ones(len(x), dtype=torch.float64)
    for s in range(scales):
        ssim, cs = ssim_cs(x, y, win)
        if s < scales - 1:
            out = out * cs.clamp(min=0) ** w[s]
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            out = out * ssim.clamp(min=0) ** w[s]
    return out.numpy()


# ----------------------------------------------------------------------------- agreement


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_matches_the_former_version(rng, size):
    """Within 0.03 per pair (torchmetrics' 11-tap window vs the former 7-tap one), same order of pairs."""
    a = rng.integers(0, 256, (8, size, size)).astype(np.uint8)
    amplitude = np.arange(8)[:, None, None] * 12  # pair i: noise of +-12i grey levels, pair 0 identical
    b = np.clip(a + rng.uniform(-1, 1, a.shape) * amplitude, 0, 255).astype(np.uint8)
    got = fidelity.ms_ssim(a, b)
    assert got.dtype == np.float64 and got[0] == pytest.approx(1.0)
    ref = ref_ms_ssim(a, b)
    np.testing.assert_allclose(got, ref, atol=0.03)
    assert abs(got.mean() - ref.mean()) < 0.02 and (np.diff(got) < 0).all()


def test_ms_ssim_refuses_images_too_small_for_the_scales():
    with pytest.raises(ValueError, match="too small"):
        fidelity.ms_ssim(np.zeros((2, 16, 16)), np.zeros((2, 16, 16)))


@pytest.mark.parametrize("classes", [2, 3])
def test_ece_matches_the_former_version(rng, classes):
    y = rng.integers(0, classes, 300)
    logits = rng.normal(size=(300, classes)) + 1.5 * np.eye(classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert metrics.expected_calibration_error(y, probs) == pytest.approx(ref_ece(y, probs), abs=1e-6)
    if classes == 2:  # a positive-class probability vector is scored top-label too
        assert metrics.expected_calibration_error(y, probs[:, 1]) == pytest.approx(ref_ece(y, probs[:, 1]), abs=1e-6)


def test_bootstrap_ci_matches_the_former_version(rng):
    y = rng.integers(0, 2, 120)
    score = y * 0.6 + rng.normal(0, 0.5, 120)
    got = metrics.bootstrap_ci(metrics.roc_auc, y, score, n_boot=2000, seed=1)
    ref = ref_bootstrap_ci(metrics.roc_auc, y, score, n_boot=2000, seed=1)
    assert got[0] == ref[0]  # the point estimate is the same computation
    assert got[1] == pytest.approx(ref[1], abs=0.015) and got[2] == pytest.approx(ref[2], abs=0.015)
    assert metrics.bootstrap_ci(metrics.roc_auc, y, score, n_boot=200, seed=1) == metrics.bootstrap_ci(
        metrics.roc_auc, y, score, n_boot=200, seed=1
    )  # seeded: reproducible


def test_paired_delta_resamples_cases_jointly(rng):
    """Two arms that differ by a constant shift have identical AUCs on every paired draw: a zero-width CI."""
    y = rng.integers(0, 2, 80)
    base = [y * 0.5 + rng.normal(0, 0.5, 80) for _ in range(2)]
    arm = [s + 10.0 for s in base]  # a monotone transform: AUC unchanged on any resample of the same cases
    d = metrics.paired_auc_delta(y, base, arm, n_boot=300)
    assert d["value"] == 0 and d["ci_low"] == 0 and d["ci_high"] == 0 and d["n_runs"] == 2


def test_bootstrap_skips_draws_where_the_metric_is_undefined():
    y = np.array([0] * 19 + [1])  # many draws hold no positive: AUC undefined there
    score = np.linspace(0, 1, 20)
    point, lo, hi = metrics.bootstrap_ci(metrics.roc_auc, y, score, n_boot=300)
    assert point == 1.0 and np.isfinite(lo) and np.isfinite(hi)


def test_prdc_on_faiss_matches_the_prdc_package(rng):
    prdc_pkg = pytest.importorskip("prdc")
    real = rng.normal(size=(120, 16)).astype(np.float32)
    syn = (rng.normal(size=(100, 16)) * 1.2 + 0.3).astype(np.float32)
    ours = fidelity.prdc(real, syn, k=5)
    theirs = prdc_pkg.compute_prdc(real_features=real, fake_features=syn, nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


@pytest.mark.parametrize(
    "n_a,n_b,d,shift,rtol",
    [
        (300, 200, 128, 0.3, 1e-12),  # more samples than dimensions: the same matrix square root
        (500, 500, 16, 1.0, 1e-12),
        (60, 50, 128, 0.0, 1e-7),  # singular covariances: eigenvalues vs sqrtm with 1e-6 regularisation
    ],
)
def test_fid_is_torchmetrics_and_matches_the_former_version(rng, n_a, n_b, d, shift, rtol):
    a, b = rng.normal(size=(n_a, d)), rng.normal(size=(n_b, d)) * 1.1 + shift
    ours = fidelity.frechet_distance(a, b)
    assert ours == pytest.approx(ref_frechet_distance(a, b), rel=rtol)
    scale = np.trace(np.cov(a, rowvar=False))  # FID's terms are of this size; a set against itself is 0 up to rounding
    assert abs(fidelity.frechet_distance(a, a)) < 1e-6 * scale
    assert fidelity.frechet_distance(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(ours, rel=1e-5)


def test_kid_matches_the_former_version_and_torchmetrics_kid(rng):
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = rng.normal(size=(120, 32)), rng.normal(size=(90, 32)) + 0.2
    for n_subsets, size in ((20, 40), (5, 1000)):
        ours = fidelity.kernel_inception_distance(a, b, n_subsets=n_subsets, subset_size=size, seed=3)
        np.testing.assert_allclose(ours, ref_kid(a, b, n_subsets, size, seed=3), rtol=1e-12, atol=1e-15)
    # one subset holding every sample: no sampling left, torchmetrics' own class gives the same number
    m = 90
    kid = KernelInceptionDistance(feature=fidelity._Precomputed(32), subsets=1, subset_size=m)
    kid.update(torch.from_numpy(a[:m]), real=True)
    kid.update(torch.from_numpy(b[:m]), real=False)
    mean, _ = kid.compute()
    ours, _ = fidelity.kernel_inception_distance(a[:m], b[:m], n_subsets=1, subset_size=m)
    assert ours == pytest.approx(float(mean), rel=1e-12)
