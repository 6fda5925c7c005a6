"""Multi-site protocol as a Ray job: foundation + few-shot vs target-only vs joint, in-site and cross-site.

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/multisite.py --config platform/busgen/configs/multisite_gpu.yaml out=/mnt/shared/reports/multisite
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("multisite"))
