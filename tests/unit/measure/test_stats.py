"""Seed-paired intervals and power (`busgen.measure.stats`), checked by simulation where a formula is not enough.

The simulated study: binormal classifiers (negatives ~ N(0, 1), positives ~ N(mu, 1)) whose
separation mu moves from seed to seed (training noise, sd ``tau``) and whose scores share a
per-case term across every classifier (a hard case is hard for all, which is why pairing
helps). The population AUC of one arm averaged over seeds is then exactly
Phi(mu / sqrt(2 + tau²)), so the true Δ is known and coverage can be counted.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from busgen.measure import stats


def simulate_study(rng, mu_base: float, mu_arm: float, seeds=5, n_cases=200, tau=0.4, rho=0.9, prevalence=0.35):
    """One experiment: (labels, base scores (seeds, N), arm scores (seeds, N)) on one shared test set."""
    y = (rng.random(n_cases) < prevalence).astype(int)
    shared = rng.standard_normal(n_cases)  # case difficulty, the same for every classifier

    def scores(mu):
        sep = mu + tau * rng.standard_normal((seeds, 1))  # this seed's training outcome
        return sep * y + np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((seeds, n_cases))

    return y, scores(mu_base), scores(mu_arm)


def true_delta(mu_base: float, mu_arm: float, tau=0.4) -> float:
    return float(norm.cdf(mu_arm / np.sqrt(2 + tau**2)) - norm.cdf(mu_base / np.sqrt(2 + tau**2)))


def coverage(mu_base: float, mu_arm: float, n_sims=120, seed=0) -> float:
    """Share of simulated 5-seed studies whose combined 95% Δ interval holds the true Δ."""
    rng, truth, hits = np.random.default_rng(seed), true_delta(mu_base, mu_arm), 0
    for i in range(n_sims):
        d = stats.delta_interval(*simulate_study(rng, mu_base, mu_arm, n_cases=150), n_boot=100, seed=i)
        hits += d.ci_low <= truth <= d.ci_high
    return hits / n_sims


def test_combined_interval_covers_a_known_delta_with_five_seeds():
    assert coverage(1.5, 1.6) >= 0.92  # 0.97 with these seeds; the old percentile interval: ~0.87


def test_identical_arms_planted_interval_contains_zero():
    assert coverage(1.5, 1.5, seed=1) >= 0.92  # true Δ = 0: the interval should rarely exclude it


def _seed_level_coverages(n_seeds=5, n_sims=2000, n_boot=500, sd=0.03, truth=0.01):
    """(t interval, percentile bootstrap over seed pairs) coverage of the mean of normal per-seed Δs."""
    rng = np.random.default_rng(0)
    d = rng.normal(truth, sd, (n_sims, n_seeds))
    t_hits = [stats.t_interval(row).low <= truth <= stats.t_interval(row).high for row in d]
    means = np.take_along_axis(d[:, None, :], rng.integers(0, n_seeds, (n_sims, n_boot, n_seeds)), 2).mean(2)
    lo, hi = np.quantile(means, [0.025, 0.975], axis=1)
    return float(np.mean(t_hits)), float(np.mean((lo <= truth) & (truth <= hi)))


def test_t_interval_covers_while_the_percentile_bootstrap_over_five_seeds_does_not():
    """Why the seed part is a t interval: resampling 5 values understates their mean's spread (~84% coverage)."""
    t_cov, pct_cov = _seed_level_coverages()
    assert t_cov >= 0.93
    assert pct_cov < 0.88


def test_t_interval_matches_the_textbook_formula():
    v = [0.01, 0.03, -0.02, 0.04, 0.00]
    iv = stats.t_interval(v)
    half = student_t.ppf(0.975, 4) * np.std(v, ddof=1) / np.sqrt(5)
    assert (iv.mean, iv.low, iv.high, iv.n) == pytest.approx((0.012, 0.012 - half, 0.012 + half, 5))


def test_combined_interval_adds_the_case_variance_to_the_seed_variance():
    v = [0.01, 0.03, -0.02, 0.04, 0.00]
    iv = stats.combined_interval(v, case_var=0.02**2)
    half = student_t.ppf(0.975, 4) * np.sqrt(np.var(v, ddof=1) / 5 + 0.02**2)
    assert iv.high - iv.mean == pytest.approx(half)


def test_case_bootstrap_resamples_the_same_cases_for_both_arms():
    rng = np.random.default_rng(3)
    y, base, _ = simulate_study(rng, 1.5, 1.5, seeds=3, n_cases=80)
    assert np.all(stats.case_bootstrap(y, base, base, n_boot=50) == 0)  # same scores on the same resample: Δ = 0
    d = stats.delta_interval(y, base, base + 0.0, n_boot=50)
    assert d.value == d.ci_low == d.ci_high == d.case_sd == 0


def test_min_detectable_effect_matches_a_hand_computed_value():
    # sd 0.018 (real only) and 0.04 (arm), 5 seeds each: Welch df = 5.57, t.975 + t.80 on it, times the SE
    se = np.sqrt(0.018**2 / 5 + 0.04**2 / 5)
    df = se**4 / ((0.018**2 / 5) ** 2 / 4 + (0.04**2 / 5) ** 2 / 4)
    expected = (student_t.ppf(0.975, df) + student_t.ppf(0.8, df)) * se
    assert stats.welch_df(0.018, 5, 0.04, 5) == pytest.approx(df)
    assert stats.min_detectable_effect(0.018, 5, 0.04, 5) == pytest.approx(expected)
    assert 0.065 < expected < 0.07  # not the 0.022 that 1.96·sd·√(2/n) promised
    assert stats.min_detectable_effect(0.018, 5, 0.018, 5) == pytest.approx(
        (student_t.ppf(0.975, 8) + student_t.ppf(0.8, 8)) * 0.018 * np.sqrt(2 / 5)
    )  # equal spreads: Welch df = 2n - 2


def test_seeds_needed_grows_with_the_spread_and_resolves_the_target():
    counts = [stats.seeds_needed(0.018, sd, target=0.02) for sd in (0.0, 0.01, 0.018, 0.04, 0.08)]
    assert counts == sorted(counts) and counts[0] >= 2
    n = int(counts[2])

    def mde(k):
        return stats.min_detectable_effect(0.018, k, 0.018, k)

    assert mde(n) <= 0.02 < mde(n - 1)  # the smallest such n
    assert stats.seeds_needed(0.018, 0.04, target=0.01) > counts[3]  # a smaller target needs more seeds
    assert stats.seeds_needed(1.0, 1.0, target=0.02, cap=1000) == float("inf")  # beyond the cap, said so


def test_one_seed_gives_nan_widths_not_zeros():
    iv = stats.t_interval([0.05])
    assert iv.mean == 0.05 and np.isnan(iv.low) and np.isnan(iv.high) and np.isnan(iv.sd)
    y, base, arm = simulate_study(np.random.default_rng(0), 1.5, 1.6, seeds=1, n_cases=60)
    d = stats.delta_interval(y, base, arm, n_boot=50)
    assert np.isfinite(d.value) and np.isfinite(d.case_sd) and d.n_runs == 1
    assert all(np.isnan(x) for x in (d.ci_low, d.ci_high, d.ci_seed_low, d.ci_seed_high))
    assert np.isnan(stats.min_detectable_effect(0.02, 1, 0.02, 5)) and np.isnan(stats.seeds_needed(np.nan, 0.02))
