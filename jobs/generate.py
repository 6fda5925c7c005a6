"""Synthetic generation as a Ray job: ``busgen.generate`` with resume-on-failure and an output check.

Submit to a cluster (paths must be on storage every node mounts, e.g. EFS/FSx at /mnt/shared)::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/generate.py --config platform/busgen/configs/generate_small.yaml \\
        model=/mnt/shared/models/pretrain out=/mnt/shared/synthetic/run1 n=100000 \\
        num_gpus=1 concurrency=8 batch_size=64 --results-fp /mnt/shared/results/generate-run1.json

Why it survives node failures (``busgen.generate.resume``): shards are renamed into place
only when complete, a re-run generates only the missing shards, and the job re-runs up
to ``max_attempts`` times before checking that the shards cover ``[0, n)`` exactly once.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("generate"))
