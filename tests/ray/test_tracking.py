"""MLflow tracking: every long operation leaves a run in the shared store, read back with ``mlflow.search_runs``.

The store is the one every command shares (here the test session's ``$MLFLOW_TRACKING_URI``,
see ``tests/conftest.py``) unless a test passes ``tracking_uri``; nothing here talks to a server.
"""

from __future__ import annotations

import time

from helpers.data import write_phantom_dataset
from helpers.models import export_untrained_tiny
from helpers.tracking import client, read_runs

from busgen.core import tracking
from busgen.train import track


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
        tracking_uri=str(tmp_path / "mlruns"),
    )
    assert pretrain.pretrain(cfg).error is None
    assert (tmp_path / "model" / track.LOSS_CURVE_PNG).stat().st_size > 1000
    runs = read_runs(tmp_path / "mlruns", "busgen-pretrain")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED" and row["params.max_steps"] == "4" and row["params.accel.precision"]
    history = client(tmp_path / "mlruns").get_metric_history(row["run_id"], "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]  # rank 0 logged every log step
    assert {"metrics.lr", "metrics.images_per_s"} <= set(runs.columns)
    names = {a.path for a in client(tmp_path / "mlruns").list_artifacts(row["run_id"], "model")}
    assert {"model/busgen.json", "model/loss_curve.png", "model/unet"} <= names


def test_generate_logs_its_manifest_into_the_shared_store(ray_local, tmp_path, tracking_store):
    from busgen.commands.registry import COMMANDS

    model = export_untrained_tiny(tmp_path / "model")
    op = COMMANDS["generate"]
    out = tmp_path / "syn"
    result = op.run(op.config_class(model=str(model), out=str(out), n=4, steps=2, shard_size=4, batch_size=4))
    assert result["tracking"].startswith("busgen runs ")  # a command that opens the run, not a dead file:// URL
    run_id = result["tracking"].split()[2]
    runs = read_runs(tracking.local_path(tracking_store), "busgen-generate")
    row = runs[runs["run_id"] == run_id].iloc[0]
    assert row["params.n"] == "4" and row["metrics.images"] == 4
    artifacts = client(tracking.local_path(tracking_store)).list_artifacts(row["run_id"])
    assert [a.path for a in artifacts] == ["manifest.json"]
    assert op.config_class.model_fields["tracking_uri"]  # hence `busgen generate --tracking-uri URI`
