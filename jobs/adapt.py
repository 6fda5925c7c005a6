"""Few-shot adaptation as a Ray job: ``busgen.train.adapt`` (K-shot support set, LoRA or full fine-tune).

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/adapt.py --config platform/busgen/configs/adapt_small.yaml \\
        base=/mnt/shared/models/pretrain data_dir=/mnt/shared/datasets/site2 out=/mnt/shared/models/site2-k10 \\
        shots=10 method=lora num_workers=1 use_gpu=true --results-fp /mnt/shared/results/adapt-site2.json

The adapted folder records its base model and the support images (``support.json``) so
evaluation never tests on them. ``busgen config show adapt`` lists every setting.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("adapt"))
