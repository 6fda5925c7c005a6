"""The one Tune grid runner: sweeps and suites validate on the driver, run one trial per point, one row each."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from busgen.eval.sweep import SweepConfig, TrialError, grid_points, prepared, run_sweep, run_trials
from tests.helpers_models import export_untrained_tiny


def test_grid_points_are_every_combination():
    cfg = SweepConfig(out="o", grid={"sampler": ["ddim", "dpmpp"], "steps": [2, 4, 8]})
    points = grid_points(cfg)
    assert len(points) == 6 and {"sampler": "dpmpp", "steps": 8} in points


def test_bad_points_and_kinds_fail_before_tune(tmp_path):
    with pytest.raises(TrialError, match="unknown trial kind 'nope'"):
        prepared("nope", {}, [{}])
    with pytest.raises(TrialError, match=r"grid point \{'sampler': 'euler'\} is not a valid sample trial"):
        prepared("sample", {"model": "m"}, [{"sampler": "ddim"}, {"sampler": "euler"}])
    with pytest.raises(TrialError, match="needs synthetic_dir"):
        base = {"real_dir": "r", "classes": ["a", "b"], "positive": "b", "artifacts_dir": "x"}
        prepared("utility", base, [{"ratio": 1.0}])


def test_path_settings_are_made_absolute_for_trials_on_other_nodes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = prepared("sample", {"model": "models/m", "n": 2}, [{"steps": 2}])
    assert base == {"model": str(tmp_path / "models" / "m"), "n": 2}


def test_bad_sweep_spec_exits_2_from_the_job(tmp_path):
    proc = subprocess.run(
        [sys.executable, "jobs/sweep.py", "--config", "evals/suites/sweep_small.yaml", "base.model=m",
         f"out={tmp_path}", "grid.sampler=[euler]"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "BUSGEN_JOB sweep status=bad_config" in proc.stdout
    assert "not a valid sample trial" in proc.stderr


def test_sweep_runs_one_trial_per_point_and_writes_its_table(ray_local, tmp_path):
    model = export_untrained_tiny(tmp_path / "model")
    cfg = SweepConfig(
        out=str(tmp_path / "sweep"),
        base={"model": str(model), "n": 2, "batch_size": 2},
        grid={"steps": [1, 2]},
        metric="images_per_s",
    )
    summary = run_sweep(cfg)
    rows = list(csv.DictReader(Path(summary["table"]).open()))
    assert sorted(int(r["steps"]) for r in rows) == [1, 2]
    assert all(r["status"] == "ok" and float(r["images_per_s"]) > 0 for r in rows)
    assert "training_iteration" not in rows[0]  # Tune's bookkeeping stays out of the table
    assert (tmp_path / "sweep" / "results.parquet").is_file() and summary["best"]["steps"] in (1, 2)


def test_a_failing_trial_is_a_row_not_an_exception(ray_local, tmp_path):
    rows = run_trials(
        "sample", {"model": str(tmp_path / "missing")}, [{"steps": 1}], str(tmp_path / "t"), "x", {"CPU": 1}
    )
    assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["error"]
