"""Experiment tracking with MLflow: one run per operation, all in one store.

Users of this project already read their experiments in MLflow, so every long
operation (pretrain, adapt, generate, evaluate) records what it did there: the
resolved config as params, metrics per log step, and its outputs as artifacts.

* **One store, offline by default.** The store is, first match wins: the command's
  ``--tracking-uri``, the ``MLFLOW_TRACKING_URI`` environment variable (MLflow's own
  convention, so a team server set once in the shell serves every command), else the
  plain folder ``runs/mlruns`` under the folder the command runs from. Every operation
  writes there, so one viewer shows them all: ``busgen runs`` (``busgen.core.tracking_view``)
  reads any store with what is installed (mlflow-skinny has no ``mlflow ui`` server).
  ``http://host:5000``, ``sqlite:///...`` or ``databricks`` point the same calls at a server.
* **Off switch.** ``tracking=false`` (``--no-tracking``) makes every call a no-op and
  never imports MLflow.
* **No global state.** Runs are handled through ``MlflowClient`` and a run id, never
  MLflow's "active run" stack, so a Ray Train worker (rank 0) can log into the run the
  driver opened: pass ``run.ref()`` in the loop config and ``attach`` it there.

MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it is "in
maintenance mode"); the file store is what "fully offline, no database" needs, so this
module sets that variable for ``file:`` stores only.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

DEFAULT_STORE = Path("runs") / "mlruns"  # the local store, relative to the folder a command runs from
ENV_URI = "MLFLOW_TRACKING_URI"  # MLflow's own variable: honoured by every command when set
PARAM_LIMIT = 6000  # MLflow's longest param value (characters)


class TrackingError(RuntimeError):
    """The tracking store cannot be opened; the message names the URI and the remedy."""


def default_uri() -> str:
    """``file://`` URI of the default local store, ``runs/mlruns`` under the working folder (made on first write)."""
    return (Path.cwd() / DEFAULT_STORE).resolve().as_uri()


def resolve_uri(tracking_uri: str | None = None) -> str:
    """The store a command uses: ``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else ``default_uri()``.

    A plain folder path becomes an absolute ``file://`` URI, so the same store is meant in
    Ray workers (they run in another working folder) and in the printed commands.
    """
    uri = tracking_uri or os.environ.get(ENV_URI) or default_uri()
    if "://" not in uri and not uri.startswith(("file:", "databricks", "sqlite:")):
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def local_path(uri: str) -> Path | None:
    """The folder of a ``file:`` store (None for servers and databases)."""
    if not uri.startswith("file:"):
        return None
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    return Path(url2pathname(urlparse(uri).path))


def is_server(uri: str) -> bool:
    """A store with a web UI of its own (an MLflow tracking server), whose run pages a browser opens."""
    return uri.startswith(("http://", "https://"))


def _allow_file_store(uri: str) -> None:
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def key(name: str) -> str:
    """A param or metric name MLflow accepts: other characters (``+``, ``=``, ...) become ``_``."""
    return re.sub(r"[^\w\-. /:]", "_", name)[:250]


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: MLflow params are flat."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def numeric(metrics: dict) -> dict[str, float]:
    """The finite int/float entries of ``metrics`` (bools and strings are not metrics)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Run:
    """One MLflow run, or a no-op when tracking is off (``Run(None, None)``).

    Logging calls after a successful start never raise: a tracking hiccup (a server that
    went away mid-run) must not fail hours of training; it is warned about once.
    """

    def __init__(self, client, run_id: str | None, uri: str | None = None, experiment_id: str | None = None):
        self.client, self.run_id, self.uri, self.experiment_id = client, run_id, uri, experiment_id
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.client is not None and self.run_id is not None

    def _call(self, what: str, method: str, *args, **kwargs) -> None:
        """``self.client.<method>(*args)`` unless tracking is off (the client is None then)."""
        if not self.enabled:
            return
        try:
            getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- MLflow raises many types (HTTP, OS, MlflowException)
            if not self._warned:
                warnings.warn(f"tracking: {what} failed ({type(exc).__name__}: {exc}); continuing", stacklevel=3)
                self._warned = True

    def log_params(self, params: dict) -> None:
        """Log a (nested) config as flat params; long values are cut at MLflow's limit."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        flat = [Param(key(k), str(v)[:PARAM_LIMIT]) for k, v in flatten(params).items()]
        for chunk in _chunks(flat, 100):
            self._call("log params", "log_batch", self.run_id, params=chunk)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Log the numeric entries of ``metrics`` (others are skipped) at ``step``."""
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(key(k), v, now, step or 0) for k, v in numeric(metrics).items()]
        for chunk in _chunks(rows, 500):
            self._call("log metrics", "log_batch", self.run_id, metrics=chunk)

    def set_tags(self, tags: dict) -> None:
        for k, v in tags.items():
            self._call("set tag", "set_tag", self.run_id, k, str(v))

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or a folder (recursively) into the run's artifacts."""
        path = Path(path)
        if not path.exists():
            return
        if path.is_dir():
            self._call("log artifacts", "log_artifacts", self.run_id, str(path), artifact_path)
        else:
            self._call("log artifact", "log_artifact", self.run_id, str(path), artifact_path)

    def child(self, name: str, tags: dict | None = None) -> Run:
        """A run nested under this one (MLflow's ``mlflow.parentRunId`` tag), e.g. one per Tune trial."""
        if not self.enabled:
            return Run(None, None)
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={"mlflow.parentRunId": self.run_id, **(tags or {})}
        )
        return Run(self.client, run.info.run_id, self.uri, self.experiment_id)

    def end(self, status: str = "FINISHED") -> None:
        self._call("end run", "set_terminated", self.run_id, status)

    def ref(self) -> dict | None:
        """What a worker needs to ``attach`` to this run (JSON-able), or None when tracking is off."""
        return {"uri": self.uri, "run_id": self.run_id, "experiment_id": self.experiment_id} if self.enabled else None

    def link(self) -> str:
        """Where to look at the run: its page on a tracking server, else the ``busgen runs`` command that shows it."""
        if not self.enabled:
            return ""
        return run_link(self.uri, self.experiment_id, self.run_id)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type else "FINISHED")


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """A link that opens: the server's run page, or for a file/database store the ``busgen runs`` command.

    A ``file://...#/experiments/...`` URL opens nothing (no server behind it), so local
    stores get the viewer command instead, naming the store unless it is the default one.
    """
    if is_server(uri):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    store = "" if uri == resolve_uri() else f" --tracking-uri {uri}"
    return f"busgen runs {run_id}{store}"


def _client(uri: str):
    _allow_file_store(uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def start_run(
    enabled: bool,
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    tags: dict | None = None,
) -> Run:
    """Open a run in ``experiment`` (created when missing) of the store ``resolve_uri(tracking_uri)``.

    A no-op ``Run`` when ``enabled`` is false.

    Raises:
        TrackingError: the store cannot be opened (unreachable server, unwritable folder).
    """
    if not enabled:
        return Run(None, None)
    uri = resolve_uri(tracking_uri)
    try:
        client = _client(uri)
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
    except Exception as exc:  # noqa: BLE001 -- connection, permission and MLflow errors alike
        raise TrackingError(
            f"cannot open the MLflow tracking store {uri} ({type(exc).__name__}: {str(exc).splitlines()[0]}): "
            "pass --tracking-uri of a reachable server or a writable folder, or --no-tracking"
        ) from None
    return Run(client, run.info.run_id, uri, exp_id)


def attach(ref: dict | None) -> Run:
    """The run described by ``Run.ref()`` (in another process, e.g. a Ray Train worker); no-op for None."""
    if not ref:
        return Run(None, None)
    return Run(_client(ref["uri"]), ref["run_id"], ref["uri"], ref.get("experiment_id"))


def log_once(
    enabled: bool,
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    params: dict,
    metrics: dict,
    artifacts: tuple[str | Path, ...] = (),
) -> str:
    """Record a finished operation as one run (params, metrics, artifacts); returns its link ('' when off)."""
    with start_run(enabled, tracking_uri, experiment, run_name) as run:
        run.log_params(params)
        run.log_metrics(metrics)
        for path in artifacts:
            run.log_artifacts(path)
        return run.link()
