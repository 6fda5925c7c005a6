"""CPSample's privacy-utility trade-off as a Ray job: ``busgen.studies.tradeoff.run`` (one row per strength alpha).

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/tradeoff.py --config platform/busgen/configs/privacy_tradeoff.yaml \\
        model=/mnt/shared/models/busi data_dir=/mnt/shared/datasets/busi out=/mnt/shared/results/tradeoff

The generator needs a protection classifier (``busgen protect``). ``busgen config show tradeoff``
lists every setting.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("tradeoff"))
