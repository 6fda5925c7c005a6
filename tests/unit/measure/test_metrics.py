"""Metric functions against scikit-learn and hand-computed values; bootstrap CI behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from busgen.measure import metrics


def _binary_task(n: int, seed: int = 0, signal: float = 1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.standard_normal(n))))
    return y, score


def test_auc_matches_sklearn():
    y, s = _binary_task(200)
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_sensitivity_specificity_hand_computed():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.3, 0.1, 0.4, 0.5])
    sens, spec = metrics.sensitivity_specificity(y, s, threshold=0.5)
    assert sens == pytest.approx(3 / 4)  # 0.9, 0.8, 0.6 caught; 0.2 missed
    assert spec == pytest.approx(3 / 5)  # 0.7 and 0.5 are false positives (>= threshold)


def test_youden_threshold_separates_perfectly_separable_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    t = metrics.youden_threshold(y, s)
    assert metrics.sensitivity_specificity(y, s, t) == (1.0, 1.0)


def test_accuracy_and_balanced_accuracy():
    y = np.array([0, 0, 0, 0, 1])
    pred = np.zeros(5, dtype=int)
    assert metrics.accuracy(y, pred) == pytest.approx(0.8)
    assert metrics.balanced_accuracy(y, pred) == pytest.approx(0.5)


def test_ece_hand_computed():
    # Two bins used: conf 0.9 (2 samples, 1 correct) and conf 0.6 (2 samples, both correct).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert metrics.expected_calibration_error(y, probs) == pytest.approx(expected)
    # Perfectly confident and correct -> zero; binary 1-D input is accepted.
    assert metrics.expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == pytest.approx(0.0)


def test_bootstrap_ci_contains_point_and_narrows_with_n():
    widths = []
    for n in (60, 1000):
        y, s = _binary_task(n, seed=1, signal=0.5)
        point, lo, hi = metrics.bootstrap_ci(metrics.roc_auc, y, s, n_boot=300, seed=0)
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_is_reproducible():
    y, s = _binary_task(80)
    assert metrics.bootstrap_ci(metrics.roc_auc, y, s, n_boot=100, seed=3) == metrics.bootstrap_ci(
        metrics.roc_auc, y, s, n_boot=100, seed=3
    )


def test_paired_auc_delta_matches_hand_computed_difference():
    y, s = _binary_task(200, seed=2, signal=0.5)
    noisy = s + np.random.default_rng(9).normal(0, 1.0, len(s))
    out = metrics.paired_auc_delta(y, [noisy, s], [s, s], n_boot=200, seed=0)
    expected = np.mean([metrics.roc_auc(y, s) - metrics.roc_auc(y, noisy), 0.0])
    assert out["value"] == pytest.approx(expected) and out["n_runs"] == 2
    assert out["ci_low"] <= out["value"] <= out["ci_high"]


def test_paired_auc_delta_is_zero_for_identical_arms_and_tighter_than_unpaired_cis():
    """Shared test-set noise cancels: a small real gain is resolved where per-arm CIs overlap."""
    y, s = _binary_task(120, seed=4, signal=0.4)
    same = metrics.paired_auc_delta(y, [s], [s], n_boot=100)
    assert (same["value"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    better = s + 0.1 * (y - 0.5)  # a consistently, slightly better arm
    paired = metrics.paired_auc_delta(y, [s], [better], n_boot=300)
    _, lo_a, hi_a = metrics.bootstrap_ci(metrics.roc_auc, y, s, n_boot=300)
    _, lo_b, hi_b = metrics.bootstrap_ci(metrics.roc_auc, y, better, n_boot=300)
    assert paired["ci_low"] > 0 and lo_b < hi_a  # paired CI excludes 0 although the arm CIs overlap
    assert paired["ci_high"] - paired["ci_low"] < min(hi_a - lo_a, hi_b - lo_b)


def test_paired_auc_delta_rejects_unpaired_runs():
    y, s = _binary_task(20)
    with pytest.raises(ValueError, match="same positive number"):
        metrics.paired_auc_delta(y, [s, s], [s])
    with pytest.raises(ValueError, match="one value per test case"):
        metrics.paired_auc_delta(y, [s], [s[:-1]])


def test_classification_report_structure_and_values():
    rng = np.random.default_rng(0)
    names = ["benign", "malignant", "normal"]
    y = rng.integers(0, 3, 150)
    logits = rng.standard_normal((150, 3)) + 2.0 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rep = metrics.classification_report([names[i] for i in y], probs, names, n_boot=200)
    assert rep["auc"]["value"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]))
    assert rep["auc"]["ci_low"] <= rep["auc"]["value"] <= rep["auc"]["ci_high"]
    assert 0.0 <= rep["ece"] <= 1.0
    assert set(rep["per_class_auc"]) == set(names)
    assert rep["accuracy"] > 1 / 3
    assert len(rep["roc"]["fpr"]) == len(rep["roc"]["tpr"])
