"""Honest utility statistics in the suite (issue 26): combined Δ intervals, power, the best recipe picked on validation.

Results written before issue 26 (``stats_version`` 1) must still load and render as they
were written; tests/e2e/test_committed_reports.py holds the committed reports to that.
"""

from __future__ import annotations

import numpy as np
import pytest

from busgen.data.report import Report
from busgen.eval.results import EvalResult
from busgen.eval.suites import SYN_ONLY, UtilitySettings
from busgen.eval.utility import report
from busgen.eval.utility.grid import paired_deltas, yardstick_power
from busgen.eval.utility.results import ClassifierMetrics, PairedDelta, UtilityResult, UtilityTrial
from busgen.measure import stats

X1, X4 = "real+syn x1", "real+syn x4"


def _metrics(auc: float) -> ClassifierMetrics:
    return ClassifierMetrics(
        auc=auc, auc_ci_low=auc - 0.05, auc_ci_high=auc + 0.05, sensitivity=0.8, sensitivity_ci_low=0.7,
        sensitivity_ci_high=0.9, specificity=0.8, specificity_ci_low=0.7, specificity_ci_high=0.9,
        accuracy=0.8, balanced_accuracy=0.8, ece=0.05, threshold=0.5, n=99,
    )  # fmt: skip


def _trial(ratio: float, seed: int, test_auc: float, val_auc: float, **kw) -> UtilityTrial:
    return UtilityTrial(
        ratio=ratio, synthetic_only=kw.pop("synthetic_only", False), seed=seed, status="ok", val_auc=val_auc,
        test_sets={"real_test": _metrics(test_auc)}, **kw,
    )  # fmt: skip


def _delta(value: float, half: float) -> PairedDelta:
    return PairedDelta(
        value=value, ci_low=value - half, ci_high=value + half, n_runs=3, ci_seed_low=value - half / 2,
        ci_seed_high=value + half / 2, case_sd=half / 4,
    )  # fmt: skip


def _study(stats_version: int = 2) -> UtilityResult:
    """x4 wins on the test Δ, x1 on validation AUC: the two ways of picking "best" disagree."""
    trials = []
    for s in range(3):
        trials += [_trial(0, s, 0.80 + 0.02 * s, 0.85), _trial(1, s, 0.81 + 0.01 * s, 0.90 + 0.01 * s)]
        trials += [_trial(4, s, 0.86 + 0.03 * s, 0.84), _trial(0, s, 0.75, 0.88, synthetic_only=True)]
    deltas = {"real_test": {X1: _delta(0.01, 0.03), X4: _delta(0.08, 0.04), SYN_ONLY: _delta(-0.05, 0.03)}}
    return UtilityResult(trials=trials, deltas=deltas, stats_version=stats_version)


def test_best_recipe_is_picked_on_validation_even_when_another_arm_has_a_better_test_delta():
    util = _study()
    assert util.best_on_validation() == X1  # highest mean val AUC among real + synthetic arms (not syn only)
    assert util.best_mix() == X4  # the old pick: largest test Δ
    assert util.best_recipe() == X1
    lines = report.target_lines(util, "real_test", UtilitySettings())
    assert f"best recipe on validation ({X1}) vs real only" in lines[1] and "+0.010" in lines[1]


def test_headline_best_arm_is_picked_on_validation():
    h = EvalResult.headline(
        EvalResult.model_construct(utility=_study(), fidelity=None, privacy=None, sampler_steps=None)
    )
    assert h.best_arm == X1 and h.delta_auc_best_mixed == pytest.approx(0.01)


def test_results_written_before_issue_26_keep_their_test_delta_pick():
    old = UtilityResult.model_validate(
        {"trials": [], "deltas": {"real_test": {X4: {"value": 0.08, "ci_low": 0.0, "ci_high": 0.1, "n_runs": 3}}}}
    )
    assert old.stats_version == 1 and old.deltas["real_test"][X4].ci_seed_low is None
    assert _study(stats_version=1).best_recipe() == X4


def test_power_rows_use_both_arms_seed_spreads():
    util = _study()
    rows = {r.arm: r for r in yardstick_power(util, "real_test")}
    assert set(rows) == {X1, X4, SYN_ONLY}  # full-data arms against real only
    real_sd, x4_sd = np.std([0.80, 0.82, 0.84], ddof=1), np.std([0.86, 0.89, 0.92], ddof=1)
    assert rows[X4].mde == pytest.approx(stats.min_detectable_effect(x4_sd, 3, real_sd, 3))
    assert rows[X4].seeds_needed == stats.seeds_needed(x4_sd, real_sd, 0.02)
    assert rows[SYN_ONLY].auc_sd == 0 and rows[SYN_ONLY].mde < rows[X4].mde


def test_noise_paragraph_prints_the_power_table_not_the_old_formula(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    rep = Report(tmp_path, "t")
    report.recipes_section(rep, _study(), UtilitySettings())
    text = "\n".join(rep.parts)
    assert "1.96·sd·√(2/n)" not in text and "MDE (80% power)" in text and "seeds for 0.02" in text
    assert "t over the seed pairs (training noise) combined with a paired bootstrap over test cases" in text
    assert "highest mean validation AUC" in text

    old = Report(tmp_path / "old", "t")
    report.recipes_section(old, _study(stats_version=1), UtilitySettings())
    assert "1.96·sd·√(2/n)" in "\n".join(old.parts) and "MDE" not in "\n".join(old.parts)


def _scored_trial(tmp_path, ratio: float, seed: int, y, score) -> UtilityTrial:
    """A finished trial whose artifacts hold only the per-case scores paired_deltas reads."""
    from busgen.eval.trials import ARTIFACTS_FILE, CaseScores, TrialArtifacts, UtilityTrialConfig

    art = tmp_path / f"r{ratio}-s{seed}"
    art.mkdir()
    config = UtilityTrialConfig(
        real_dir="r", synthetic_dir="s", ratio=ratio, synthetic_only=False, seed=seed,
        classes=["benign", "malignant"], positive="malignant", artifacts_dir=str(tmp_path),
    )  # fmt: skip
    scores = {"real_test": CaseScores(positive=list(map(int, y)), score=list(map(float, score)))}
    (art / ARTIFACTS_FILE).write_text(
        TrialArtifacts(config=config, reports={}, scores=scores, history=[]).model_dump_json()
    )
    return UtilityTrial(ratio=ratio, synthetic_only=False, seed=seed, status="ok", artifacts=str(art))


def test_paired_deltas_use_the_combined_interval(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    base, arm = y + rng.normal(0, 1, (3, 60)), 1.3 * y + rng.normal(0, 1, (3, 60))
    trials = [_scored_trial(tmp_path, 0, s, y, base[s]) for s in range(3)]
    trials += [_scored_trial(tmp_path, 1, s, y, arm[s]) for s in range(3)]
    d = paired_deltas(trials, n_boot=200, resample_seeds=True)["real_test"][X1]
    expected = stats.delta_interval(y, base, arm, n_boot=200)
    assert (d.value, d.ci_low, d.ci_high, d.case_sd) == pytest.approx(
        (expected.value, expected.ci_low, expected.ci_high, expected.case_sd)
    )
    assert d.ci_low < d.ci_seed_low < d.value < d.ci_seed_high < d.ci_high and d.n_runs == 3


def test_one_seed_pair_reports_no_interval_rather_than_a_zero_width_one(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    trials = [_scored_trial(tmp_path, 0, 0, y, y + rng.normal(0, 1, 40))]
    trials.append(_scored_trial(tmp_path, 1, 0, y, y + rng.normal(0, 1, 40)))
    d = paired_deltas(trials, n_boot=50, resample_seeds=True)["real_test"][X1]
    assert np.isnan(d.ci_low) and np.isnan(d.ci_high) and d.case_sd > 0 and d.n_runs == 1
    assert d.text(signed=True).endswith("[n/a]")
    assert (
        report.verdict(d.model_copy(update={"value": 0.5}), 0.03) == "met on the point estimate, not resolved (no CI)"
    )
