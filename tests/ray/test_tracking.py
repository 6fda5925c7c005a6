"""MLflow tracking: every long operation leaves a run in a local file store, read back with ``mlflow.search_runs``.

The store is the default one (under the run folder) unless a test passes
``tracking_uri``; nothing here talks to a server.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from helpers.data import write_phantom_dataset
from helpers.models import export_untrained_tiny

from busgen.core import tracking
from busgen.train import track


def _runs(store: Path, experiment: str):
    mlflow.set_tracking_uri(store.resolve().as_uri())
    return mlflow.search_runs(experiment_names=[experiment])


def test_pretrain_logs_config_metrics_model_folder_and_loss_curve(ray_local, tmp_path):
    from busgen.train import pretrain

    data = write_phantom_dataset(tmp_path / "data", 32, size=32)
    cfg = pretrain.PretrainConfig(
        data_dir=str(data),
        batch_size=8,
        max_steps=4,
        warmup_steps=1,
        checkpoint_every=4,
        log_every=1,
        storage_path=str(tmp_path / "runs"),
        run_name=f"t{time.time_ns()}",
        out=str(tmp_path / "model"),
    )
    assert pretrain.pretrain(cfg).error is None
    assert (tmp_path / "model" / track.LOSS_CURVE_PNG).stat().st_size > 1000
    runs = _runs(tmp_path / "runs" / cfg.run_name / tracking.STORE_DIR, "busgen-pretrain")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED" and row["params.max_steps"] == "4" and row["params.accel.precision"]
    history = mlflow.MlflowClient().get_metric_history(row["run_id"], "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]  # rank 0 logged every log step
    assert {"metrics.lr", "metrics.images_per_s"} <= set(runs.columns)
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(row["run_id"], "model")}
    assert {"model/busgen.json", "model/loss_curve.png", "model/unet"} <= names


def test_generate_logs_its_manifest(ray_local, tmp_path):
    from busgen.commands.registry import COMMANDS

    model = export_untrained_tiny(tmp_path / "model")
    op = COMMANDS["generate"]
    out = tmp_path / "syn"
    result = op.run(op.config_class(model=str(model), out=str(out), n=4, steps=2, shard_size=4, batch_size=4))
    assert result["tracking"].startswith((out / "mlruns").as_uri())
    row = _runs(out / tracking.STORE_DIR, "busgen-generate").iloc[0]
    assert row["params.n"] == "4" and row["metrics.images"] == 4
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(row["run_id"])] == ["manifest.json"]
    assert op.config_class.model_fields["tracking_uri"]  # hence `busgen generate --tracking-uri URI`
