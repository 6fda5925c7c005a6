"""Honest intervals and power for a seed-paired comparison of two classifier arms (numpy and scipy only).

A utility study trains each arm with a handful of seeds (3-5) and tests every classifier
on the same test cases, so a difference of AUCs carries two noises: training noise (seed
to seed) and test-set sampling noise (which cases happened to be drawn). With so few
seeds a percentile bootstrap over seed pairs is too narrow (it covers ~75-85% of the
time, not 95%: the resampled mean of 5 values never strays as far as the t distribution
says it should), so here

* the seed component is a t interval over the per-seed paired differences
  (``t_interval``: mean ± t_{n-1,.975}·sd/√n);
* the case component is a paired bootstrap over test cases (``case_bootstrap``: one case
  resample serves both arms and every seed; the statistic is the difference averaged over
  seeds), whose variance is the test set's share of the noise;
* the two add as variances (``delta_interval``: mean ± t_{n-1,.975}·√(sd_seed²/n + var_case)).
  Using the seed df for the sum is conservative where the case part dominates, which is
  the side to err on with n = 3-5.

How small a difference a design can find is the 80%-power minimum detectable effect from
both arms' seed spreads (``min_detectable_effect``, Welch df), and ``seeds_needed`` says
how many seeds per arm would resolve a target such as 0.02 AUC. One seed has no spread:
every width is NaN, never zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from scipy.stats import t as student_t

SEEDS_CAP = 10_000  # seeds_needed searches up to here; beyond it the answer is "more than SEEDS_CAP" (inf)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% (1 - alpha) interval; ``sd`` = sample sd over the ``n`` values (NaN for one)."""

    mean: float
    low: float
    high: float
    sd: float
    n: int


@dataclass(frozen=True)
class DeltaStats:
    """A seed-paired difference: the combined interval, its seed-only part and the case-sampling sd."""

    value: float
    ci_low: float
    ci_high: float
    ci_seed_low: float
    ci_seed_high: float
    case_sd: float
    n_runs: int


def rank_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``scores`` (N, K) at once (Mann-Whitney U with midranks for ties)."""
    pos = np.asarray(y).astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return np.full(scores.shape[1], np.nan)
    ranks = rankdata(scores, axis=0)
    return (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _t(q: float, df: float) -> float:
    return float(student_t.ppf(q, df)) if df > 0 else float("nan")


def t_interval(values, alpha: float = 0.05) -> Interval:
    """Mean ± t_{n-1, 1-alpha/2}·sd/√n over seeds: right coverage for a handful of normal-ish values."""
    v = np.asarray(values, dtype=float)
    mean, sd, n = float(np.mean(v)), _sd(v), len(v)
    half = float(_t(1 - alpha / 2, n - 1) * sd / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, sd, n)


def case_bootstrap(y: np.ndarray, base: np.ndarray, arm: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the seed-mean AUC difference under resampling of test cases only.

    Args:
        y: (N,) binary labels of the shared test set.
        base, arm: (R, N) positive-class scores, row i of each from seed i (the pairing).

    Returns:
        The finite draws of mean_i [AUC(arm_i) - AUC(base_i)], one per case resample (draws
        with one class only are dropped, not counted as zero).
    """
    y, base, arm = np.asarray(y).astype(bool), np.asarray(base, dtype=float), np.asarray(arm, dtype=float)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, n_boot, 256):  # chunks of resamples, ranked at once: (runs, chunk, N) stays small
        cases = rng.integers(0, len(y), (min(256, n_boot - start), len(y)))
        draws.append(np.mean(_resampled_auc(y, arm, cases) - _resampled_auc(y, base, cases), axis=0))
    draws = np.concatenate(draws) if draws else np.empty(0)
    return draws[np.isfinite(draws)]


def _resampled_auc(y: np.ndarray, scores: np.ndarray, cases: np.ndarray) -> np.ndarray:
    """(runs, B) AUCs of every run's scores (runs, N) on B case resamples ``cases`` (B, N); NaN for one class."""
    pos = y[cases]  # (B, N)
    n_pos = pos.sum(1)
    n_neg = pos.shape[1] - n_pos
    ranks = rankdata(scores[:, cases], axis=-1)  # (runs, B, N)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * pos).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def combined_interval(seed_deltas, case_var: float, alpha: float = 0.05) -> Interval:
    """Mean ± t_{n-1}·√(sd_seed²/n + case_var): training noise by t, test-set noise from the case bootstrap."""
    v = np.asarray(seed_deltas, dtype=float)
    mean, sd, n = float(np.mean(v)), _sd(v), len(v)
    half = float(_t(1 - alpha / 2, n - 1) * np.sqrt(sd**2 / n + case_var))
    return Interval(mean, mean - half, mean + half, sd, n)


def delta_interval(
    y: np.ndarray, base: np.ndarray, arm: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> DeltaStats:
    """AUC(arm) - AUC(base) over seed pairs on one test set: combined, seed-only and case parts (module docstring)."""
    base, arm = np.atleast_2d(np.asarray(base, dtype=float)), np.atleast_2d(np.asarray(arm, dtype=float))
    if base.shape != arm.shape or base.shape[1] != len(y):
        raise ValueError(f"need (runs, {len(y)}) scores for both arms, got {base.shape} and {arm.shape}")
    per_seed = rank_auc(y, arm.T) - rank_auc(y, base.T)
    draws = case_bootstrap(y, base, arm, n_boot, seed)
    case_var = float(np.var(draws, ddof=1)) if len(draws) > 1 else float("nan")
    seed_part, both = t_interval(per_seed, alpha), combined_interval(per_seed, case_var, alpha)
    return DeltaStats(
        value=both.mean, ci_low=both.low, ci_high=both.high, ci_seed_low=seed_part.low,
        ci_seed_high=seed_part.high, case_sd=float(np.sqrt(case_var)), n_runs=len(per_seed),
    )  # fmt: skip


def welch_df(sd_a: float, n_a: int, sd_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two means with unequal spreads."""
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    den = (va**2 / (n_a - 1) if n_a > 1 else np.inf) + (vb**2 / (n_b - 1) if n_b > 1 else np.inf)
    return float((va + vb) ** 2 / den) if den > 0 else float(n_a + n_b - 2)


def min_detectable_effect(
    sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true difference of seed means a two-sided level-alpha test finds with the given power.

    MDE = (t_{1-alpha/2, df} + t_{power, df})·√(sd_a²/n_a + sd_b²/n_b), df by Welch. At 50%
    power and z in place of t (the old "1.96·sd·√(2/n)") it is about half as large, which is
    how a 5-seed study came to look able to resolve 0.02 AUC. NaN when an arm has < 2 seeds.
    """
    if n_a < 2 or n_b < 2 or not (np.isfinite(sd_a) and np.isfinite(sd_b)):
        return float("nan")
    se = float(np.sqrt(sd_a**2 / n_a + sd_b**2 / n_b))
    if se == 0:
        return 0.0
    df = welch_df(sd_a, n_a, sd_b, n_b)
    return (_t(1 - alpha / 2, df) + _t(power, df)) * se


def seeds_needed(
    sd_a: float, sd_b: float, target: float = 0.02, alpha: float = 0.05, power: float = 0.8, cap: int = SEEDS_CAP
) -> float:
    """Smallest seeds per arm n (>= 2) with MDE(n) <= target: ``inf`` beyond ``cap``, NaN for an unknown spread.

    MDE(n) only falls as n grows (smaller standard error, larger df), so a bisection finds it.
    """
    if not (np.isfinite(sd_a) and np.isfinite(sd_b)) or target <= 0:
        return float("nan")

    def ok(n: int) -> bool:
        return min_detectable_effect(sd_a, n, sd_b, n, alpha, power) <= target

    if not ok(cap):
        return float("inf")
    lo, hi = 2, cap
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return float(lo)
