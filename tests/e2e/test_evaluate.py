"""End-to-end evaluation suite (utility_ci) on 32 px phantoms: real Tune trials, real Parquet, full report.

The generator is an untrained export: the suite's plumbing (generation, mixes, encoder,
audit, membership, sampler grid) does not depend on what it learnt, and a real
pretrain would cost minutes. Membership inference against a *trained* (overfit)
generator is tested in test_membership.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.data import write_parquet_dataset
from helpers.models import export_untrained_tiny

from busgen.core.config import ConfigError, load_config
from busgen.data.phantom import make_phantom_arrays
from busgen.eval import report as evalreport
from busgen.eval import runner as evaluate
from busgen.eval.results import EvalResult
from busgen.eval.suites import SuiteConfig
from busgen.measure.reference import REFERENCE_VERSION

SIZE = 32


SUITE = "platform/busgen/configs/utility_ci.yaml"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _real_set(out, n: int, seed: int, style: str = "a", splits=("train", "val", "test")):
    images, masks, labels = make_phantom_arrays(n, SIZE, seed=seed, style=style)
    # 50/25/25 split, interleaved so every split holds every class
    cycle = [splits[0], splits[0], splits[1], splits[2]] if len(splits) == 3 else list(splits)
    return write_parquet_dataset(
        out, images, masks, labels, f"phantom_{style}", [cycle[i % len(cycle)] for i in range(n)]
    )


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("eval")
    real = _real_set(root / "real", 240, seed=0)
    external = _real_set(root / "external", 60, seed=5, style="b", splits=("test",))
    model = export_untrained_tiny(root / "model", size=SIZE, domains=("phantom_a",))
    cfg = load_config(
        SuiteConfig,
        SUITE,
        [
            f"real_dir={real}",
            f"model={model}",
            f"out={root / 'report'}",
            f"utility.external_test={{site_b: {external}}}",
        ],
    )
    return evaluate.run_suite(cfg), root / "report"


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_report_has_every_part_and_plot(suite_run):
    result, out = suite_run
    for name in (
        "report.md",
        "results.json",
        "results.parquet",
        "results.csv",
        "sampler_steps.csv",
        "auc_vs_ratio.png",
        "roc.png",
        "roc_site_b.png",
        "samples.png",
        "nn_pairs.png",
        "fid_vs_steps.png",
    ):
        assert (out / name).is_file(), name
    text = (out / "report.md").read_text()
    for heading in (
        "Downstream diagnosis",
        "Cross-dataset",
        "Fidelity",
        "Privacy",
        "Membership inference",
        "FID vs sampler",
    ):
        assert heading in text, heading
    saved = json.loads((out / "results.json").read_text())
    assert {"timestamp", "run_id", "params", "metrics"} <= set(saved)
    assert saved["metrics"]["utility_trials_failed"] == 0 and result.trials_failed() == 0


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_results_json_reads_back_to_the_same_result(suite_run):
    result, out = suite_run
    again = EvalResult.read(out)  # the folder or its results.json
    assert again.model_dump_json() == result.model_dump_json()
    assert again.params == result.params and again.headline() == result.metrics
    assert EvalResult.read(out / "results.json").run_id == result.run_id


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_report_renders_from_a_read_back_result(suite_run, tmp_path):
    import shutil

    _, out = suite_run
    for picture in ("samples.npz", "nn_pairs.png"):  # left in the folder by the runner, not in results.json
        shutil.copy(out / picture, tmp_path / picture)
    text = evalreport.write_report(tmp_path, EvalResult.read(out)).read_text()

    def body(md: str) -> list[str]:  # all but the "_Generated <time>_" line
        return [line for line in md.splitlines() if not line.startswith("_Generated ")]

    assert body(text) == body((out / "report.md").read_text())
    assert (tmp_path / "auc_vs_ratio.png").is_file() and (tmp_path / "fid_vs_steps.png").is_file()


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_results_table_rows_and_cis(suite_run):
    result, out = suite_run
    table = pq.read_table(out / "results.parquet").to_pylist()
    # 3 arms (real, real+syn x1, syn only) x 1 seed x 2 test sets (real test, external site_b)
    assert len(table) == 6
    assert {r["arm"] for r in table} == {"real", "real+syn x1", "syn only"}
    assert {r["test_set"] for r in table} == {"real_test", "site_b"}
    for r in table:
        assert r["status"] == "ok"
        for m in ("auc", "sensitivity", "specificity"):
            assert r[f"{m}_ci_low"] - 1e-9 <= r[m] <= r[f"{m}_ci_high"] + 1e-9, (m, r)
        assert 0 <= r["ece"] <= 1 and 0 <= r["balanced_accuracy"] <= 1
    assert {r["n"] for r in table if r["test_set"] == "real_test"} == {40}  # benign + malignant of the 60 test rows


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_arms_are_compared_with_real_only_on_the_same_cases(suite_run):
    """The synthetic-vs-real targets are judged on seed-paired AUC differences with paired-bootstrap CIs."""
    result, out = suite_run
    by_arm = {(r.test_set, r.arm): r.metrics.auc for r in result.utility.rows()}
    deltas = result.utility.deltas
    assert set(deltas) == {"real_test", "site_b"} and set(deltas["real_test"]) == {"real+syn x1", "syn only"}
    for test_set, arms in deltas.items():
        for arm, d in arms.items():  # one seed: the difference of the two arms' AUCs on that test set
            assert d.value == pytest.approx(by_arm[(test_set, arm)] - by_arm[(test_set, "real")])
            # one seed pair has no seed spread: no interval (NaN, not a zero-width one), only the case part
            assert np.isnan(d.ci_low) and np.isnan(d.ci_high) and d.case_sd >= 0 and d.n_runs == 1
    text = (out / "report.md").read_text()
    assert "Δ AUC vs real" in text and "synthetic only vs real only (target Δ ≥ -0.02)" in text
    assert result.metrics.delta_auc_synthetic_only == pytest.approx(deltas["real_test"]["syn only"].value)


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_fidelity_privacy_and_sampler_parts(suite_run):
    result, _ = suite_run
    fid = result.fidelity
    assert set(fid.per_class) == {"benign", "malignant"} and np.isfinite(fid.overall.fid)
    assert 0 <= fid.detector.auc <= 1
    ref = fid.reference  # the headline: the shipped reference encoder, named, with the real-vs-real floor
    assert ref.encoder.name == REFERENCE_VERSION and ref.synthetic.fid_n == min(ref.synthetic.n_real, 48)
    assert ref.floor is not None and np.isfinite(ref.synthetic.kid) and not fid.legacy
    assert result.metrics.reference_encoder == ref.encoder.label and result.sampler_steps.encoder == ref.encoder
    priv = result.privacy
    assert priv.memorization.n_synthetic == 48
    assert 0 <= priv.membership.auc <= 1 and priv.membership.n_members == 24
    steps = result.sampler_steps.rows
    assert sorted(r.steps for r in steps) == [2, 4] and all(np.isfinite(r.fid) for r in steps)
    assert result.metrics.best_sampler in {"ddim/2", "ddim/4"} and result.metrics.sampler_trials_failed == 0


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_report_renders_without_optional_parts(suite_run, tmp_path):
    result, _ = suite_run
    partial = result.model_copy(update={"privacy": None, "sampler_steps": None, "fidelity": None})
    text = evalreport.write_report(tmp_path, partial).read_text()
    assert "Not run in this suite" in text and "Downstream diagnosis" in text
    assert not (tmp_path / "fid_vs_steps.png").exists()


def test_config_errors_are_caught_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(SuiteConfig, SUITE, [f"real_dir={tmp_path}", "utility.ratio=[1]"])
    with pytest.raises(ConfigError, match="synthetic arms need"):
        load_config(SuiteConfig, SUITE, [f"real_dir={tmp_path}", "sampler_steps.enabled=false"])
    proc = subprocess.run(
        [sys.executable, "jobs/evaluate.py", "--config", SUITE, f"real_dir={tmp_path}", "positive=normal"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "BUSGEN_JOB evaluate status=bad_config" in proc.stdout


@pytest.mark.slow  # a full suite on Ray Tune (about a minute)
def test_share_filter_cli_removes_planted_copies(suite_run, tmp_path):
    import pyarrow as pa
    from typer.testing import CliRunner

    from busgen.cli import app
    from busgen.data.dataset import read_table

    result, out = suite_run
    real_dir, syn_dir = result.inputs.real_dir, result.inputs.synthetic_dir
    syn = read_table(syn_dir)
    train_pngs = read_table(real_dir, ["image"], split="train").column("image").to_pylist()[:3]
    images = train_pngs + syn.column("image").to_pylist()[3:]  # rows 0-2 become verbatim training copies
    planted = tmp_path / "planted"
    planted.mkdir()
    pq.write_table(
        syn.set_column(syn.schema.get_field_index("image"), "image", pa.array(images, pa.binary())),
        planted / "part-0.parquet",
    )
    shutil.copy(Path(syn_dir) / "manifest.json", planted / "manifest.json")  # which generator wrote it
    not_training = CliRunner().invoke(
        app, ["share-filter", str(planted), "--real", real_dir, "--split", "val", "--out", str(tmp_path / "no")]
    )
    assert not_training.exit_code == 2 and "is not the training data of the generator" in not_training.output
    assert not (tmp_path / "no").exists()
    result = CliRunner().invoke(
        app,
        [
            "share-filter",
            str(planted),
            "--real",
            real_dir,
            "--out",
            str(tmp_path / "shared"),
            "--encoder-epochs",
            "2",
            "--no-check-real",
        ],
    )
    assert result.exit_code == 0, result.output
    audit = json.loads((tmp_path / "shared" / "audit.json").read_text())
    assert audit["real_check"] == "overridden (--no-check-real)"  # the untrained fixture model saw no real data
    assert {0, 1, 2} <= set(audit["removed_ids"]) and audit["rows_out"] == audit["rows_in"] - len(audit["removed_ids"])
    kept = read_table(tmp_path / "shared", ["index"]).column("index").to_pylist()
    assert not {0, 1, 2} & set(kept)
