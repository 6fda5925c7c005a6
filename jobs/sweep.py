"""Grid sweeps as a Ray job: one Ray Tune trial per grid point, results table in the output folder.

Submit to a cluster::

    ray job submit --working-dir . -- python jobs/sweep.py --config evals/suites/sweep_small.yaml \\
        base.model=/mnt/shared/models/pretrain out=s3://busgen-runs/sweeps/samplers \\
        'resources_per_trial={CPU: 4, GPU: 1}' --results-fp /mnt/shared/results/sweep-samplers.json

The spec is a `busgen.eval.sweep.SweepConfig` (trial ``kind``, shared ``base`` settings, the
``grid``); `busgen.eval.sweep.run_sweep` validates every grid point before Tune starts and
writes ``results.csv`` and ``results.parquet`` to ``out``, a local folder or an ``s3://`` URI.
An invalid grid point or trial kind exits 2, like any bad config.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from busgen.eval.sweep import SweepConfig, TrialError, resource_demand, run_sweep  # noqa: E402
from jobs import _common  # noqa: E402

__all__ = ["SweepConfig", "main", "resource_demand"]


def main(cfg: SweepConfig) -> dict:
    try:
        return run_sweep(cfg)
    except TrialError as exc:
        raise _common.ConfigError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(_common.run_job("sweep", SweepConfig, main))
