"""MLflow tracking: every long operation leaves a run in one store, read back with ``mlflow.search_runs``.

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``runs/mlruns`` under the
working folder; tests pass a store of their own. Nothing here talks to a server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tracking import client, read_runs

from busgen.core import tracking
from busgen.train import track


def _uri(tmp_path: Path) -> str:
    return (tmp_path / "mlruns").as_uri()


def test_one_store_for_every_command_flag_then_environment_then_runs_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    assert tracking.resolve_uri() == (tmp_path / "runs" / "mlruns").as_uri()
    monkeypatch.setenv(tracking.ENV_URI, "http://mlflow.team:5000")
    assert tracking.resolve_uri() == "http://mlflow.team:5000"  # MLflow's own variable is honoured
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"  # the command's flag wins
    assert tracking.resolve_uri("store") == (tmp_path / "store").as_uri()  # a folder becomes an absolute URI


def test_links_open_a_server_page_or_name_the_viewer_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    assert (
        tracking.run_link("http://mlflow.team:5000/", "3", "abc") == "http://mlflow.team:5000/#/experiments/3/runs/abc"
    )
    assert tracking.run_link(tracking.resolve_uri(), "3", "abc") == "busgen runs abc"  # the default store
    other = _uri(tmp_path)
    assert tracking.run_link(other, "3", "abc") == f"busgen runs abc --tracking-uri {other}"


def test_run_logs_flat_params_metrics_children_and_artifacts(tmp_path):
    (tmp_path / "report.md").write_text("# report")
    with tracking.start_run(True, _uri(tmp_path), "exp", "suite") as run:
        run.log_params({"lr": 3e-4, "model": {"dropout": 0.1}, "classes": ["a", "b"]})
        run.log_metrics({"loss": 0.5, "note": "text", "ok": True, "nan": float("nan")}, step=3)
        with run.child("trial real+syn x0.5") as child:
            child.log_metrics({"real_test.auc": 0.8, "arm real+syn x0.5": 1})
        run.log_artifacts(tmp_path / "report.md", "report")
        link = run.link()
    assert link == f"busgen runs {run.run_id} --tracking-uri {_uri(tmp_path)}"
    runs = read_runs(tmp_path / "mlruns", "exp")
    parent = runs[runs["tags.mlflow.runName"] == "suite"].iloc[0]
    child = runs[runs["tags.mlflow.runName"] == "trial real+syn x0.5"].iloc[0]
    assert parent["params.lr"] == "0.0003" and parent["params.model.dropout"] == "0.1"
    assert parent["metrics.loss"] == 0.5 and "metrics.note" not in runs and "metrics.nan" not in runs
    assert child["tags.mlflow.parentRunId"] == parent["run_id"] and child["metrics.real_test.auc"] == 0.8
    assert child["metrics.arm real_syn x0.5"] == 1  # '+' is not allowed in MLflow names
    assert parent["status"] == "FINISHED"
    assert [a.path for a in client(tmp_path / "mlruns").list_artifacts(parent["run_id"], "report")] == [
        "report/report.md"
    ]


def test_a_failing_block_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError), tracking.start_run(True, _uri(tmp_path), "exp", "boom"):
        raise RuntimeError("training died")
    assert read_runs(tmp_path / "mlruns", "exp")["status"].tolist() == ["FAILED"]


def test_tracking_off_writes_nothing(tmp_path):
    run = tracking.start_run(False, _uri(tmp_path), "exp", "x")
    run.log_params({"a": 1})
    run.log_metrics({"loss": 1.0})
    run.set_tags({"k": "v"})
    (tmp_path / "artifact.txt").write_text("x")
    run.log_artifacts(tmp_path / "artifact.txt")  # a no-op; it used to reach into the missing client
    run.end()
    assert not run.enabled and run.ref() is None and run.link() == ""
    assert tracking.attach(None).enabled is False
    assert not (tmp_path / "mlruns").exists()


def test_an_unusable_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(tracking.TrackingError, match="--tracking-uri .* or --no-tracking"):
        tracking.start_run(True, (blocker / "mlruns").as_uri(), "exp", "x")


def test_eta_and_loss_history_stay_small():
    assert track.eta_text(10, 110, 0, 20.0) == "ETA 3m20s"
    assert track.eta_text(0, 100, 0, 5.0) == ""
    history: list = []
    for step in range(1, 2001):
        track.remember(history, step, 1.0 / step)
    assert len(history) <= track.HISTORY_POINTS and history[0][0] == 1 and history[-1][0] > 1900


def _metrics(auc: float):
    from busgen.eval.results import ClassifierMetrics

    fields = {k: auc for k, f in ClassifierMetrics.model_fields.items() if f.annotation is float}
    return ClassifierMetrics(**fields, n=40)


def test_evaluate_logs_a_suite_run_with_one_nested_run_per_trial(tmp_path):
    from busgen.eval import track as eval_track
    from busgen.eval.results import (
        EvalResult,
        Inputs,
        PairedDelta,
        SamplerStepsResult,
        SamplerStepsRow,
        UtilityResult,
        UtilityTrial,
    )
    from busgen.eval.suites import SuiteConfig

    cfg = SuiteConfig(
        real_dir=str(tmp_path), synthetic_dir=str(tmp_path), out=str(tmp_path / "report"), tracking_uri=_uri(tmp_path)
    )
    trials = [
        UtilityTrial(
            ratio=r, synthetic_only=False, seed=s, status="ok", test_sets={"real_test": _metrics(0.7 + r / 10)}
        )
        for r in (0, 1)
        for s in (0, 1)
    ]
    delta = PairedDelta(value=0.1, ci_low=0.02, ci_high=0.18, n_runs=2)
    result = EvalResult(
        suite="t",
        run_id="r",
        timestamp="now",
        params=cfg,
        inputs=Inputs(real_dir=str(tmp_path)),
        utility=UtilityResult(trials=trials, deltas={"real_test": {"real+syn x1": delta}}),
        sampler_steps=SamplerStepsResult(rows=[SamplerStepsRow(sampler="ddim", steps=10, status="ok", fid=12.5)]),
    )
    result.metrics = result.headline()
    out = Path(cfg.out)
    out.mkdir()
    (out / "report.md").write_text("# report")
    run = eval_track.open_suite(cfg, out)
    eval_track.log_suite(run, result, out)
    runs = read_runs(tmp_path / "mlruns", eval_track.EXPERIMENT)
    suite = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == suite["run_id"]]
    assert len(children) == 5  # 4 utility trials + 1 sampler-steps trial
    assert suite["metrics.auc_real_only"] == pytest.approx(0.7)
    assert suite["metrics.delta.real_test.real_syn x1.ci_low"] == pytest.approx(0.02)
    one = children[children["tags.mlflow.runName"] == "utility real+syn x1-seed1"].iloc[0]
    assert one["metrics.real_test.auc"] == pytest.approx(0.8) and one["params.ratio"] == "1.0"
    assert children[children["tags.mlflow.runName"].str.startswith("sampler")]["metrics.fid"].tolist() == [12.5]
    artifacts = client(tmp_path / "mlruns").list_artifacts(suite["run_id"], "report")
    assert [a.path for a in artifacts] == ["report/report.md"]
