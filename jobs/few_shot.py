"""Few-shot sweep as a Ray job: adapt with K in {5, 10, 20, 50} and score each K (``busgen.studies.fewshot``).

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/few_shot.py --config platform/busgen/configs/few_shot.yaml \\
        base=/mnt/shared/models/pretrain target_dir=/mnt/shared/datasets/site_b \\
        reference_dir=/mnt/shared/datasets/site_a out=/mnt/shared/results/few_shot
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("few-shot"))
