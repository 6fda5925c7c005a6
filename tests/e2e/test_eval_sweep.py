"""The one Tune grid runner: sweeps and suites validate on the driver, run one trial per point, one row each."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.models import export_untrained_tiny

from busgen.eval.sweep import SweepConfig, run_sweep, run_trials


def test_bad_sweep_spec_exits_2_from_the_job(tmp_path):
    proc = subprocess.run(
        [sys.executable, "jobs/sweep.py", "--config", "platform/busgen/configs/sweep_small.yaml", "base.model=m",
         f"out={tmp_path}", "grid.sampler=[euler]"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "BUSGEN_JOB sweep status=bad_config" in proc.stdout
    assert "not a valid sample trial" in proc.stderr


@pytest.mark.slow  # Ray Tune grids
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


@pytest.mark.slow  # Ray Tune grids
def test_a_failing_trial_is_a_row_not_an_exception(ray_local, tmp_path):
    rows = run_trials(
        "sample", {"model": str(tmp_path / "missing")}, [{"steps": 1}], str(tmp_path / "t"), "x", {"CPU": 1}
    )
    assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["error"]
