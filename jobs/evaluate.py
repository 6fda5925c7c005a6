"""Evaluation suite as a Ray job: utility / fidelity / privacy / sampler-steps report for one generator.

Submit to a cluster (paths on storage every node mounts; Tune trials write their artifacts there)::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/evaluate.py --config platform/busgen/configs/utility.yaml real_dir=/mnt/shared/data/busi64 \\
        model=/mnt/shared/models/pretrain out=/mnt/shared/reports/utility-run1 \\
        'resources_per_trial={CPU: 4, GPU: 1}' --results-fp /mnt/shared/results/evaluate-run1.json

The suite spec is a `busgen.eval.suites.SuiteConfig`; unknown keys and invalid values fail
before any work starts (exit 2). The job writes the report folder (``report.md``, PNGs,
``results.parquet``/``.csv``, ``results.json``) to ``out`` and exits non-zero when the
suite fails or any Tune trial failed.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("evaluate"))
