"""Grid sweeps as a Ray job: one Ray Tune trial per grid point, results table in the output folder.

Submit to a cluster::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/sweep.py --config platform/busgen/configs/sweep_small.yaml \\
        base.model=/mnt/shared/models/pretrain out=s3://busgen-runs/sweeps/samplers \\
        'resources_per_trial={CPU: 4, GPU: 1}' --results-fp /mnt/shared/results/sweep-samplers.json

The spec is a `busgen.eval.sweep.SweepConfig` (trial ``kind``, shared ``base`` settings, the
``grid``); every grid point is validated before Tune starts (an invalid one exits 2), and
``results.csv`` and ``results.parquet`` go to ``out``, a local folder or an ``s3://`` URI.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("sweep"))
