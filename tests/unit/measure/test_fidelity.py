"""Fidelity metrics: closed-form and brute-force checks, ordering on phantom devices, MS-SSIM sanity."""

from __future__ import annotations

import numpy as np
import pytest

from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.measure import classify, fidelity
from busgen.model import classifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _gauss(n, d, shift=0.0, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


def test_fid_matches_closed_form_for_gaussians():
    # Identity covariances: FID = ||mu_a - mu_b||^2 (+ sampling noise).
    a, b = _gauss(4000, 4, seed=0), _gauss(4000, 4, shift=1.0, seed=1)
    assert fidelity.frechet_distance(a, b) == pytest.approx(4.0, rel=0.1)
    assert fidelity.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_near_zero_for_same_distribution_and_positive_otherwise():
    a, a2, b = _gauss(300, 8, seed=0), _gauss(300, 8, seed=1), _gauss(300, 8, shift=0.7, seed=2)
    same, _ = fidelity.kernel_inception_distance(a, a2, n_subsets=20, subset_size=200)
    diff, _ = fidelity.kernel_inception_distance(a, b, n_subsets=20, subset_size=200)
    assert abs(same) < 0.05 < diff


def _prdc_bruteforce(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    r_r, r_f = np.sort(d_rr, 1)[:, k], np.sort(d_ff, 1)[:, k]
    return {
        "precision": (d_rf < r_r[:, None]).any(0).mean(),
        "recall": (d_rf < r_f[None, :]).any(1).mean(),
        "density": (d_rf < r_r[:, None]).sum(0).mean() / k,
        "coverage": (d_rf.min(1) < r_r).mean(),
    }


def test_prdc_matches_bruteforce_reference():
    real, fake = _gauss(120, 6, seed=0).astype(np.float32), _gauss(90, 6, shift=0.5, seed=1).astype(np.float32)
    got, want = fidelity.prdc(real, fake, k=5), _prdc_bruteforce(real, fake, 5)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_prdc_separates_matched_from_shifted_distributions():
    real = _gauss(300, 8, seed=0)
    same = fidelity.prdc(real, _gauss(300, 8, seed=1))
    off = fidelity.prdc(real, _gauss(300, 8, shift=2.0, seed=2))
    assert same["precision"] > 0.7 and same["coverage"] > 0.7 and 0.6 < same["density"] < 1.5
    assert off["precision"] < 0.3 and off["coverage"] < 0.3


def test_ms_ssim_identical_is_one_and_noise_lowers_it():
    imgs, _, _ = make_phantom_arrays(4, 32, seed=0)
    np.testing.assert_allclose(fidelity.ms_ssim(imgs, imgs), 1.0, atol=1e-9)
    noisy = np.clip(imgs + np.random.default_rng(0).normal(0, 25, imgs.shape), 0, 255).astype(np.uint8)
    score = fidelity.ms_ssim(imgs, noisy)
    assert (score < 0.99).all() and (score > 0).all()
    np.testing.assert_allclose(score, fidelity.ms_ssim(noisy, imgs), atol=1e-9)


def test_ms_ssim_diversity_detects_mode_collapse():
    imgs, _, labels = make_phantom_arrays(30, 32, seed=0)
    collapsed = np.repeat(imgs[:1], 30, axis=0)
    diverse = fidelity.ms_ssim_diversity(imgs, labels, n_pairs=30)
    same = fidelity.ms_ssim_diversity(collapsed, labels, n_pairs=30)
    assert all(same[c] == pytest.approx(1.0) for c in same)
    assert all(diverse[c] < 0.9 for c in diverse)


@pytest.fixture(scope="module")
def device_feats():
    """In-domain features (a real-data classifier's penultimate layer) of device a, split in two, and device b."""
    a, _, la = make_phantom_arrays(240, 32, seed=0, style="a")
    b, _, lb = make_phantom_arrays(120, 32, seed=1, style="b")
    cfg = classifier.ClassifierConfig.small(image_size=32, epochs=3, batch_size=32, samples_per_epoch=240)
    model, _ = classify.train_classifier(a[:120], la[:120], a[120:], la[120:], cfg, CLASSES)
    fa, fb = classifier.embed(model, a), classifier.embed(model, b)
    return (fa[:120], la[:120], a[:120]), (fa[120:], la[120:], a[120:]), (fb, lb, b)


def test_fid_real_split_much_lower_than_other_device(device_feats):
    (f1, _, _), (f2, _, _), (fb, _, _) = device_feats
    assert fidelity.frechet_distance(f1, f2) * 3 < fidelity.frechet_distance(f1, fb)
    assert fidelity.kernel_inception_distance(f1, f2, 20)[0] < fidelity.kernel_inception_distance(f1, fb, 20)[0]


def test_fidelity_report_overall_per_class_and_ms_ssim(device_feats):
    (f1, l1, x1), (f2, l2, x2), _ = device_feats
    rep = fidelity.fidelity_report(f1, f2, l1, l2, real_images=x1, syn_images=x2, kid_subset_size=40)
    assert set(rep["per_class"]) == {"benign", "malignant", "normal"}
    for block in [rep["overall"], *rep["per_class"].values()]:
        assert {"fid", "kid", "precision", "recall", "density", "coverage"} <= set(block)
    assert rep["overall"]["n_real"] == 120
    assert set(rep["ms_ssim"]["real"]) == set(rep["ms_ssim"]["synthetic"]) == {"benign", "malignant", "normal"}
