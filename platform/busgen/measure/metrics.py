"""Diagnostic metrics with bootstrap confidence intervals.

Downstream evaluation asks one clinical question -- does training on synthetic
data change how well a classifier separates malignant from the rest? -- so the
report is built around the positive class (one-vs-rest) at a stated operating
point, with percentile-bootstrap CIs so that small test sets do not produce
over-confident comparisons. Point metrics come from scikit-learn, the expected
calibration error from torchmetrics, the bootstrap from ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve

from busgen.measure.stats import rank_auc  # one AUC-per-column kernel for both modules

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary ROC AUC (y_true in {0, 1}, y_score = score of the positive class)."""
    return float(roc_auc_score(y_true, y_score))


def roc_curve_data(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, list[float]]:
    """ROC curve points as JSON-friendly lists (for the report's ROC plot)."""
    fpr, tpr, thr = roc_curve(y_true, y_score)
    # sklearn's first threshold is +inf, which JSON cannot hold; it means "flag nothing".
    thr = np.where(np.isfinite(thr), thr, np.finfo(np.float64).max)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Operating point maximising Youden's J = sens + spec - 1 (choose it on validation, apply on test)."""
    fpr, tpr, thr = roc_curve(y_true, y_score)
    finite = np.isfinite(thr)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thr[int(np.argmax(j))])


def sensitivity_specificity(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """Sensitivity (TPR) and specificity (TNR) when predicting positive for score >= threshold."""
    y_pred = (np.asarray(y_score) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(np.asarray(y_true).astype(int), y_pred, labels=[0, 1]).ravel()
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return float(sens), float(spec)


def sensitivity_at(threshold: float) -> MetricFn:
    """Metric function (y_true, y_score) -> sensitivity at a fixed threshold, for bootstrap_ci."""
    return lambda y, s: sensitivity_specificity(y, s, threshold)[0]


def specificity_at(threshold: float) -> MetricFn:
    """Metric function (y_true, y_score) -> specificity at a fixed threshold, for bootstrap_ci."""
    return lambda y, s: sensitivity_specificity(y, s, threshold)[1]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(accuracy_score(y_true, y_pred))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall: the accuracy that does not reward predicting the majority class."""
    return float(balanced_accuracy_score(y_true, y_pred))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error with equal-width confidence bins (Guo et al. 2017), by torchmetrics.

    ECE = sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|. torchmetrics' bins are
    left-closed (a confidence exactly on a bin edge goes one bin up from the former
    hand-written version); other inputs give the same number (tests/unit/measure/test_metric_libs.py).

    Args:
        y_true: (N,) integer class indices.
        probs: (N, C) class probabilities, or (N,) positive-class probabilities of a binary task
            (scored top-label too: the confidence is max(p, 1 - p), not p).
        n_bins: number of equal-width bins over [0, 1].
    """
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    if len(probs) == 0:
        return 0.0
    ece = multiclass_calibration_error(
        torch.from_numpy(probs),
        torch.as_tensor(np.asarray(y_true), dtype=torch.long),
        num_classes=probs.shape[1],
        n_bins=n_bins,
        norm="l1",
        validate_args=False,  # rows need not sum to exactly 1 (float32 softmax outputs)
    )
    return float(ece)


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    y_score: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of a metric computed on (y_true, y_score) pairs (``scipy.stats.bootstrap``).

    Cases are resampled with replacement, paired: one draw of case indices serves the
    labels and every score column alike (``paired=True``), so a (N, K) ``y_score`` of
    several arms is resampled jointly. Resamples on which the metric is undefined (e.g.
    AUC with one class present) are skipped rather than biasing the interval.

    Returns:
        (point estimate on the full data, lower bound, upper bound).
    """
    import warnings

    from scipy.stats import bootstrap

    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    point = float(metric_fn(y_true, y_score))
    if len(y_true) < 2:
        return point, float("nan"), float("nan")
    columns = tuple(y_score.T) if y_score.ndim == 2 else (y_score,)

    def statistic(y_s, *cols):
        try:
            value = float(metric_fn(y_s, np.stack(cols, axis=1) if y_score.ndim == 2 else cols[0]))
        except ValueError:
            return np.nan
        return value if np.isfinite(value) else np.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN draws and degenerate distributions: handled below
        res = bootstrap(
            (y_true, *columns),
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=n_boot,
            method="percentile",
            confidence_level=1 - alpha,
            random_state=np.random.default_rng(seed),
        )
    stats = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
    if not len(stats):
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def paired_auc_delta(
    y_true: np.ndarray,
    scores_base: Sequence[np.ndarray],
    scores_arm: Sequence[np.ndarray],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    resample_runs: bool = False,
) -> dict[str, float]:
    """AUC(arm) - AUC(base) on the same test cases, averaged over paired runs, with a paired bootstrap CI.

    Two arms tested on one test set share its sampling noise; separate CIs per arm (each
    +-0.05 on ~100 cases) overlap even when one arm is consistently better. Resampling the
    cases once per bootstrap draw and scoring both arms on that draw cancels the shared
    noise, which is what a target like "within 0.02 AUC of real-only" needs.

    Args:
        y_true: (N,) binary labels of the shared test set.
        scores_base, scores_arm: one (N,) positive-class score array per run (e.g. per
            seed), paired by position: run i of the arm is compared with run i of the base.
        resample_runs: also resample the run pairs in each bootstrap draw (`_two_level_delta`).

    Returns:
        {"value", "ci_low", "ci_high", "n_runs"}: mean over runs of the AUC difference.
    """
    y = np.asarray(y_true)
    if len(scores_base) != len(scores_arm) or not scores_base:
        raise ValueError(
            f"need the same positive number of base and arm runs, got {len(scores_base)} and {len(scores_arm)}"
        )
    base, arm = np.stack([np.asarray(s) for s in scores_base]), np.stack([np.asarray(s) for s in scores_arm])
    if base.shape[1] != len(y) or arm.shape[1] != len(y):
        raise ValueError(f"scores must have one value per test case ({len(y)}), got {base.shape[1]} and {arm.shape[1]}")
    runs = len(base)

    def mean_delta(y_s: np.ndarray, paired: np.ndarray) -> float:
        return float(np.mean([roc_auc(y_s, paired[:, runs + i]) - roc_auc(y_s, paired[:, i]) for i in range(runs)]))

    if resample_runs:
        return {**_two_level_delta(y, base, arm, n_boot, alpha, seed), "n_runs": runs}
    # one (N, 2 * runs) score matrix: bootstrap_ci resamples its rows, i.e. cases, jointly for all runs
    point, lo, hi = bootstrap_ci(mean_delta, y, np.concatenate([base, arm]).T, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"value": point, "ci_low": lo, "ci_high": hi, "n_runs": runs}


def _two_level_delta(y, base: np.ndarray, arm: np.ndarray, n_boot: int, alpha: float, seed: int) -> dict:
    """Bootstrap over test cases *and* seed pairs: each draw resamples both, so the CI holds training noise.

    With few seeds the case-only interval describes the test set's noise around these
    particular classifiers; resampling the (base, arm) seed pairs as well answers the
    question a recipe comparison asks -- would another set of seeds agree?
    """
    rng = np.random.default_rng(seed)
    runs = len(base)
    point = float(np.mean(rank_auc(y, arm.T) - rank_auc(y, base.T)))
    stats = np.empty(n_boot)
    for b in range(n_boot):
        cases = rng.integers(0, len(y), len(y))
        pick = rng.integers(0, runs, runs)
        d = rank_auc(y[cases], arm[pick][:, cases].T) - rank_auc(y[cases], base[pick][:, cases].T)
        stats[b] = np.mean(d)
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return {"value": point, "ci_low": float("nan"), "ci_high": float("nan")}
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"value": point, "ci_low": float(lo), "ci_high": float(hi)}


def _ci_dict(point_lo_hi: tuple[float, float, float]) -> dict[str, float]:
    point, lo, hi = point_lo_hi
    return {"value": point, "ci_low": lo, "ci_high": hi}


def label_indices(labels: Sequence, class_names: Sequence[str]) -> np.ndarray:
    """Class names or integer labels -> int64 indices into ``class_names`` (a name outside them is an error)."""
    arr = np.asarray(labels)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    lookup = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({str(v) for v in arr} - set(lookup))
    if unknown:
        raise ValueError(
            f"error: labels {unknown} are not among the classes {list(class_names)}; filter them out first"
        )
    return np.array([lookup[str(v)] for v in arr], dtype=np.int64)


def classification_report(
    y_true: Sequence,
    probs: np.ndarray,
    class_names: Sequence[str],
    positive: str = "malignant",
    threshold: float = 0.5,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Full diagnostic report: positive-vs-rest AUC/sens/spec with CIs, multi-class accuracy, ECE, ROC.

    Args:
        y_true: (N,) class indices or class names.
        probs: (N, C) predicted probabilities, columns ordered as class_names.
        class_names: class names in column order.
        positive: the class treated as positive (malignant vs rest).
        threshold: operating point on the positive-class probability; pass a Youden
            threshold chosen on validation data to report at that point instead of 0.5.
        n_boot, alpha, seed: bootstrap settings.

    Returns:
        JSON-friendly dict; metrics with CIs are {"value", "ci_low", "ci_high"}.
    """
    y = label_indices(y_true, class_names)
    probs = np.asarray(probs, dtype=np.float64)
    pos = list(class_names).index(positive)
    y_bin, score = (y == pos).astype(int), probs[:, pos]
    y_pred = probs.argmax(axis=1)
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    report = {
        "n": int(len(y)),
        "class_names": list(class_names),
        "positive": positive,
        "threshold": float(threshold),
        "auc": _ci_dict(bootstrap_ci(roc_auc, y_bin, score, **boot)),
        "sensitivity": _ci_dict(bootstrap_ci(sensitivity_at(threshold), y_bin, score, **boot)),
        "specificity": _ci_dict(bootstrap_ci(specificity_at(threshold), y_bin, score, **boot)),
        "accuracy": accuracy(y, y_pred),
        "balanced_accuracy": balanced_accuracy(y, y_pred),
        "ece": expected_calibration_error(y, probs),
        "roc": roc_curve_data(y_bin, score),
        "per_class_auc": _per_class_auc(y, probs, class_names),
        "class_counts": {c: int((y == i).sum()) for i, c in enumerate(class_names)},
    }
    return report


def _per_class_auc(y: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, float | None]:
    """One-vs-rest AUC per class; None for a class absent from (or filling) the test set."""
    out: dict[str, float | None] = {}
    for i, c in enumerate(class_names):
        y_c = (y == i).astype(int)
        out[c] = roc_auc(y_c, probs[:, i]) if 0 < y_c.sum() < len(y_c) else None
    return out
