"""Read a test's MLflow store back without moving MLflow's process-wide store.

``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI``, which every busgen command
honours; a test that left it pointing at its own folder would send later tests' runs there.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow


def read_runs(store: Path, experiment: str):
    """``mlflow.search_runs`` of ``experiment`` in the folder ``store`` (a DataFrame); the global store is kept."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(Path(store).resolve().as_uri())
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(before)


def client(store: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=Path(store).resolve().as_uri())
