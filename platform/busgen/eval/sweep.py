"""The one Ray Tune grid runner: one trial per grid point, one row per trial.

``run_trials`` runs a trial kind of ``TRIALS`` over a list of grid points. The points are
passed as a single ``grid_search`` over whole dicts, so arbitrary, non-rectangular grids
(e.g. ratios plus a synthetic-only arm) are one Tune run. Every point is validated
against the kind's settings class on the driver first, so a typo fails in a second
rather than after the first trial. Evaluation suites (`busgen.eval.runner`) and sweep
specs (``platform/busgen/configs/sweep_*.yaml``, ``jobs/sweep.py``) both run their grids here.

A sweep spec (``SweepConfig``) names the trial ``kind``, the ``base`` settings every trial
shares and the ``grid``: the sweep runs every combination of the grid's values once and
writes ``results.csv`` and ``results.parquet`` (one row per trial: its grid values,
status and metrics) to ``out``, a local folder or an ``s3://`` URI.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any, Callable, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from busgen.core.config import ConfigError
from busgen.core.raylocal import init_ray
from busgen.core.storage import resolve_location, write_tables
from busgen.eval import trials
from busgen.eval.progress import trial_progress


class TrialKind(NamedTuple):
    settings: type[BaseModel]  # validated for every grid point on the driver
    run: Callable[[dict], dict]  # settings dict -> scalar metrics
    paths: tuple[str, ...]  # settings that are local paths: made absolute on the driver


TRIALS: dict[str, TrialKind] = {
    "utility": TrialKind(
        trials.UtilityTrialConfig, trials.utility_trial, ("real_dir", "synthetic_dir", "artifacts_dir")
    ),
    "fid": TrialKind(trials.FidTrialConfig, trials.fid_trial, ("model", "encoder_dir", "real_features")),
    "sample": TrialKind(trials.SampleTrialConfig, trials.sample_trial, ("model",)),
}


class TrialError(ConfigError):
    """A grid point that is not a valid trial of its kind, or an unknown kind (a bad config: exit status 2)."""


def trial_kind(kind: str) -> TrialKind:
    if kind not in TRIALS:
        raise TrialError(f"error: unknown trial kind {kind!r}; use one of {sorted(TRIALS)}")
    return TRIALS[kind]


def prepared(kind: str, base: dict, points: list[dict]) -> dict:
    """``base`` with the kind's path settings made absolute, after validating every point against it."""
    spec = trial_kind(kind)
    base = {k: resolve_location(str(v)) if k in spec.paths and v else v for k, v in base.items()}
    for point in points:
        try:
            spec.settings(**{**base, **point})
        except ValidationError as exc:
            raise TrialError(f"error: grid point {point} is not a valid {kind} trial: {exc}") from None
    return base


def _tune_keys() -> set[str]:
    """Bookkeeping keys Tune adds to every result (not the trial's metrics)."""
    from ray.tune import result

    return set(result.AUTO_RESULT_KEYS) | {result.DONE, result.TRIAL_ID, result.EXPERIMENT_TAG, "should_checkpoint"}


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _trainable(run: Callable[[dict], dict]) -> Callable[[dict], None]:
    """Tune passes {"base", "point"}; trials take the merged settings, and their scalars are reported."""

    def trainable(config: dict) -> None:
        from ray import tune

        tune.report(_scalars(run({**config["base"], **config["point"]})))

    trainable.__name__ = run.__name__
    return trainable


def run_trials(
    kind: str,
    base: dict,
    points: list[dict],
    storage_path: str,
    name: str,
    resources: dict[str, float],
    max_concurrent: int = 0,
) -> list[dict]:
    """Run one Tune trial of ``kind`` per grid point (``base`` updated with the point).

    Returns:
        rows: the point's keys, ``status`` (ok / error), ``error`` (truncated message or "")
        and every scalar metric the trial returned.
    """
    from ray import tune

    base = prepared(kind, base, points)
    init_ray()
    tuner = tune.Tuner(
        tune.with_resources(_trainable(TRIALS[kind].run), {k: v for k, v in resources.items() if v}),
        param_space={"base": base, "point": tune.grid_search(points)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent or None),
        run_config=tune.RunConfig(
            name=f"{name}-{uuid.uuid4().hex[:6]}",
            storage_path=resolve_location(storage_path),
            verbose=0,  # Tune's tables swamp job logs; one line per finished trial instead:
            callbacks=[trial_progress(name, len(points))],
        ),
    )
    skip = _tune_keys()
    rows = []
    for result in tuner.fit():
        row = {**result.config["point"], "status": "error" if result.error else "ok"}
        row["error"] = str(result.error)[:500] if result.error else ""
        row.update({k: v for k, v in _scalars(result.metrics or {}).items() if k not in skip and k not in row})
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- sweep specs


class SweepConfig(BaseModel):
    """Run a grid sweep (one Ray Tune trial per grid point) and write its results table.

    A sweep spec (``platform/busgen/configs/sweep_*.yaml``) plus where its results go.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("sample", description="trial kind, a key of TRIALS (checked before Tune starts)")
    base: dict[str, Any] = Field({}, description="settings shared by every trial")
    grid: dict[str, list] = Field({}, description="key -> values; one trial per combination")
    out: str = Field(description="results folder: local path or s3:// URI")
    name: str = Field("sweep", description="Tune experiment name (a unique suffix is added per run)")
    storage_path: str | None = Field(
        None, description="Tune storage (local path every node sees, or URI); default: <out>/tune"
    )
    resources_per_trial: dict[str, float] = Field(
        {"CPU": 1}, description="Ray resources of one trial, e.g. {CPU: 4, GPU: 1}"
    )
    max_concurrent_trials: int = Field(0, ge=0, description="0 = as many as the cluster's resources allow")
    metric: str = Field("images_per_s", description="reported metric that ranks trials")
    mode: Literal["max", "min"] = Field("max", description="max or min: whether a larger metric is better")

    def resource_demand(self) -> dict[str, float]:
        """Ray resources one trial asks for: some node type of ``cluster.yaml`` must offer them."""
        return {k: v for k, v in self.resources_per_trial.items() if v}


def grid_points(cfg: SweepConfig) -> list[dict]:
    """Every combination of the grid, as the dict a trial receives (without the base settings)."""
    keys = list(cfg.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(cfg.grid[k] for k in keys))]


def best_row(rows: list[dict], metric: str, mode: Literal["max", "min"]) -> dict | None:
    """The successful trial with the best ``metric`` (None when no trial reported it)."""
    ok = [r for r in rows if r["status"] == "ok" and isinstance(r.get(metric), (int, float))]
    return (max if mode == "max" else min)(ok, key=lambda r: r[metric]) if ok else None


def run_sweep(cfg: SweepConfig) -> dict:
    """Validate, run every grid point as a Tune trial, write the results table; returns the summary.

    Raises:
        TrialError: unknown kind or an invalid grid point (before Tune starts).
        RuntimeError: some trials failed (the table is written first).
    """
    points = grid_points(cfg)
    prepared(cfg.kind, cfg.base, points)  # fail before creating anything
    out = resolve_location(cfg.out).rstrip("/")
    rows = run_trials(
        cfg.kind,
        cfg.base,
        points,
        cfg.storage_path or f"{out}/tune",
        cfg.name,
        cfg.resources_per_trial,
        cfg.max_concurrent_trials,
    )
    _, table = write_tables(f"{out}/results", rows)
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        raise RuntimeError(f"{failed} of {len(rows)} trials failed; see {table}")
    best = best_row(rows, cfg.metric, cfg.mode)
    if best is None:
        raise RuntimeError(f"error: no trial reported metric {cfg.metric!r}; set `metric` to one of {sorted(rows[0])}")
    best_point = {k: best[k] for k in cfg.grid}
    print(
        f"[sweep] {len(rows)} trials -> {table}; best {cfg.metric}={best[cfg.metric]:.4g} at {best_point}", flush=True
    )
    return {
        "trials": len(rows),
        "table": table,
        f"best_{cfg.metric}": best[cfg.metric],
        "best": best_point,
        "rows": rows,
    }
