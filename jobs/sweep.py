"""Grid sweeps as a Ray job: one Ray Tune trial per grid point, results table in the output folder.

Submit to a cluster::

    ray job submit --working-dir . -- python jobs/sweep.py --config evals/suites/sweep_small.yaml \\
        base.model=/mnt/shared/models/pretrain out=s3://busgen-runs/sweeps/samplers \\
        'resources_per_trial={CPU: 4, GPU: 1}' --results-fp /mnt/shared/results/sweep-samplers.json

A spec names the trial ``kind`` (a function in ``TRIALS``), the ``base`` settings every
trial shares and the ``grid``: each grid key becomes ``tune.grid_search(values)``, so the
sweep runs every combination once. Trial settings are validated for every grid point
before Tune starts, so a typo fails in a second rather than after the first trial.
The results table (``results.csv`` and ``results.parquet``: one row per trial with its
grid values and metrics) is written to ``out``, a local folder or an ``s3://`` URI.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from jobs import _common  # noqa: E402

# ----------------------------------------------------------------------------- trials


class SampleTrialConfig(BaseModel):
    """One ``sample`` trial: time ``n`` images from an exported generator."""

    model_config = ConfigDict(extra="forbid")

    model: str  # exported generator directory, on storage every node reads
    n: int = Field(8, ge=1)  # images per trial
    batch_size: int = Field(8, ge=1)  # images per forward pass
    sampler: Literal["ddim", "dpmpp", "ddpm"] = "ddim"
    steps: int = Field(10, ge=1)  # denoising steps
    guidance: float = Field(1.8, ge=0)  # classifier-free guidance scale
    seed: int = 0
    torch_threads: int = Field(1, ge=1)  # keep equal to resources_per_trial CPU for honest timings


def sample_trial(config: dict) -> None:
    """Tune trainable: sampling throughput (img/s) and a pixel-statistics sanity check for one setting."""
    import torch
    from ray import tune

    from busgen.model import generator

    cfg = SampleTrialConfig(**config)
    torch.set_num_threads(cfg.torch_threads)
    gen = generator.load(cfg.model)
    labels = [gen.class_names[i % len(gen.class_names)] for i in range(cfg.n)]
    kwargs = dict(steps=cfg.steps, guidance=cfg.guidance, sampler=cfg.sampler, batch_size=cfg.batch_size)
    gen.sample(labels[:1], seeds=[cfg.seed], **kwargs)  # warm-up: first call allocates and loads kernels
    t0 = time.perf_counter()
    images = gen.sample(labels, seeds=[cfg.seed + i for i in range(cfg.n)], **kwargs)
    seconds = time.perf_counter() - t0
    tune.report(
        {
            "images_per_s": cfg.n / seconds,
            "seconds": seconds,
            "n": cfg.n,
            "pixel_mean": float(images.mean()),
            "pixel_std": float(images.std()),
        }
    )


# A trial kind: its settings class (validated on the driver) and its Tune trainable.
TRIALS: dict[str, tuple[type[BaseModel], Callable[[dict], None]]] = {
    "sample": (SampleTrialConfig, sample_trial),
}


# ----------------------------------------------------------------------------- sweep


class SweepConfig(BaseModel):
    """A sweep spec (``evals/suites/sweep_*.yaml``) plus where its results go."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "sample"  # trial kind, a key of TRIALS (checked before Tune starts)
    base: dict[str, Any] = {}  # settings shared by every trial
    grid: dict[str, list] = {}  # key -> values; one trial per combination
    out: str  # results folder: local path or s3:// URI
    name: str = "sweep"  # Tune experiment name
    storage_path: str | None = None  # Tune storage (local path every node sees, or URI); default: <out>/tune
    resources_per_trial: dict[str, float] = {"CPU": 1}  # Ray resources of one trial, e.g. {CPU: 4, GPU: 1}
    max_concurrent_trials: int = Field(0, ge=0)  # 0 = as many as the cluster's resources allow
    metric: str = "images_per_s"  # reported metric that ranks trials
    mode: Literal["max", "min"] = "max"


def grid_points(cfg: SweepConfig) -> list[dict]:
    """Every combination of the grid, as the dict a trial receives (without the base settings)."""
    keys = list(cfg.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(cfg.grid[k] for k in keys))]


def trial_settings(cfg: SweepConfig) -> tuple[dict, list[dict]]:
    """Base settings with paths made absolute, after validating every grid point against the trial's class."""
    settings_cls, _ = TRIALS[cfg.kind]
    base = dict(cfg.base)
    if "model" in base:
        base["model"] = _common.resolve_location(str(base["model"]))
    points = grid_points(cfg)
    for point in points:
        try:
            settings_cls(**{**base, **point})
        except Exception as exc:
            raise _common.ConfigError(f"grid point {point} is not a valid {cfg.kind} trial: {exc}") from None
    return base, points


def resource_demand(cfg: SweepConfig) -> dict[str, float]:
    """Ray resources one trial asks for: some node type of ``cluster.yaml`` must offer them."""
    return {k: v for k, v in cfg.resources_per_trial.items() if v}


def run_tuner(cfg: SweepConfig, base: dict, storage_path: str):
    """One Tune trial per grid point; returns the ``ResultGrid``."""
    from ray import tune

    from busgen.core.raylocal import init_ray

    init_ray()
    _, trainable = TRIALS[cfg.kind]
    tuner = tune.Tuner(
        tune.with_resources(trainable, resource_demand(cfg)),
        param_space={**base, **{k: tune.grid_search(v) for k, v in cfg.grid.items()}},
        tune_config=tune.TuneConfig(
            metric=cfg.metric, mode=cfg.mode, num_samples=1, max_concurrent_trials=cfg.max_concurrent_trials or None
        ),
        run_config=tune.RunConfig(name=cfg.name, storage_path=storage_path),
    )
    return tuner.fit()


def results_rows(results, grid_keys: list[str]) -> list[dict]:
    """One row per trial: grid values, status and every scalar metric it reported last."""
    rows = []
    for result in results:
        row = {k: result.config.get(k) for k in grid_keys}
        row["status"] = "error" if result.error else "ok"
        row.update(
            {
                k: v
                for k, v in (result.metrics or {}).items()
                if isinstance(v, (int, float, str)) and k not in row and not k.startswith("config/")
            }
        )
        rows.append(row)
    return rows


def main(cfg: SweepConfig) -> dict:
    if cfg.kind not in TRIALS:
        raise _common.ConfigError(f"unknown trial kind {cfg.kind!r}; known: {sorted(TRIALS)}")
    base, points = trial_settings(cfg)
    out = _common.resolve_location(cfg.out)
    storage = _common.resolve_location(cfg.storage_path or f"{out.rstrip('/')}/tune")
    results = run_tuner(cfg, base, storage)
    rows = results_rows(results, list(cfg.grid))
    table_loc = f"{out.rstrip('/')}/results.csv"
    _common.write_table(table_loc, rows)
    _common.write_table(f"{out.rstrip('/')}/results.parquet", rows)
    if results.num_errors:
        raise RuntimeError(f"{results.num_errors} of {len(points)} trials failed; see {table_loc}")
    best = results.get_best_result()
    print(
        f"[sweep] {len(rows)} trials -> {table_loc}; best {cfg.metric}={best.metrics[cfg.metric]:.4g} "
        f"at {{{', '.join(f'{k}: {best.config[k]}' for k in cfg.grid)}}}",
        flush=True,
    )
    return {
        "trials": len(rows),
        "table": table_loc,
        f"best_{cfg.metric}": best.metrics[cfg.metric],
        "best": {k: best.config[k] for k in cfg.grid},
        "rows": rows,
    }


if __name__ == "__main__":
    sys.exit(_common.run_job("sweep", SweepConfig, main))
