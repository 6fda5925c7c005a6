"""End-to-end evaluation suite (utility_ci) on 32 px phantoms: real Tune trials, real Parquet, full report.

The generator is an untrained export: the suite's plumbing (generation, mixes, encoder,
audit, membership, sampler grid) does not depend on what it learnt, and a real
pretrain would cost minutes. Membership inference against a *trained* (overfit)
generator is tested in test_membership.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from busgen.core.config import load_config
from busgen.eval.results import EvalResult, UtilityTrial
from busgen.eval.suites import SuiteConfig
from busgen.eval.utility.grid import paired_deltas

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_reading_a_missing_result_names_the_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match="error: no evaluation result"):
        EvalResult.read(tmp_path)


def _trial(tmp_path, ratio: float, seed: int, positive: list[int], score: list[float], synthetic_only=False):
    """A finished utility trial whose artifacts hold only the per-case scores paired_deltas reads."""
    from busgen.eval.trials import ARTIFACTS_FILE, CaseScores, TrialArtifacts, UtilityTrialConfig

    art = tmp_path / f"r{ratio}-s{seed}-{synthetic_only}"
    art.mkdir()
    config = UtilityTrialConfig(
        real_dir="r", synthetic_dir="s", ratio=ratio, synthetic_only=synthetic_only, seed=seed,
        classes=["benign", "malignant"], positive="malignant", artifacts_dir=str(tmp_path),
    )  # fmt: skip
    scores = {"real_test": CaseScores(positive=positive, score=score)}
    artifacts = TrialArtifacts(config=config, reports={}, scores=scores, history=[])
    (art / ARTIFACTS_FILE).write_text(artifacts.model_dump_json())
    return UtilityTrial(ratio=ratio, synthetic_only=synthetic_only, seed=seed, status="ok", artifacts=str(art))


def test_paired_deltas_pair_seeds_and_skip_arms_tested_on_other_cases(tmp_path):
    from busgen.measure import metrics

    y = [0, 0, 1, 1, 0, 1]
    real = [[0.1, 0.6, 0.4, 0.9, 0.2, 0.7], [0.3, 0.2, 0.8, 0.6, 0.5, 0.4]]
    syn = [[0.1, 0.2, 0.8, 0.9, 0.3, 0.7], [0.2, 0.1, 0.9, 0.5, 0.6, 0.8]]
    trials = [_trial(tmp_path, 0, s, y, real[s]) for s in (0, 1)] + [_trial(tmp_path, 1, s, y, syn[s]) for s in (0, 1)]
    trials.append(_trial(tmp_path, 0, 0, y[::-1], syn[0], synthetic_only=True))  # other cases: cannot pair
    deltas = paired_deltas(trials, n_boot=50)["real_test"]
    expected = np.mean(
        [
            metrics.roc_auc(np.array(y), np.array(syn[s])) - metrics.roc_auc(np.array(y), np.array(real[s]))
            for s in (0, 1)
        ]
    )
    assert set(deltas) == {"real+syn x1"} and deltas["real+syn x1"].n_runs == 2
    assert deltas["real+syn x1"].value == pytest.approx(expected)


@pytest.mark.parametrize("spec", ["utility", "utility_ci", "sampler_steps", "busi_full", "busi_cpu"])
def test_shipped_suites_are_valid_configs(spec):
    """A typo in a suite someone runs for hours must fail at load, not after the pretraining."""
    # the generic suites take real_dir and model from the command line
    cfg = load_config(SuiteConfig, f"platform/busgen/configs/{spec}.yaml", ["real_dir=unused", "model=unused"])
    assert cfg.classes and cfg.positive in cfg.classes


def test_evaluate_cli_rejects_unknown_suite_and_bad_override(tmp_path):
    from typer.testing import CliRunner

    from busgen.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["evaluate", "--config", "no_such_suite", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "config file not found" in missing.output
    bad = runner.invoke(
        app, ["evaluate", "--config", "utility_ci", "--out", str(tmp_path), f"real_dir={tmp_path}", "utility.seedz=[1]"]
    )
    assert bad.exit_code == 2 and "seedz" in bad.output
