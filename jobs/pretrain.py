"""Generator pretraining as a Ray job: ``busgen.train.pretrain`` on Ray Train, then export.

Submit to a cluster (paths on storage every node mounts, e.g. EFS/FSx at /mnt/shared)::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/pretrain.py --config platform/busgen/configs/pretrain_tiny.yaml \\
        data_dir=/mnt/shared/data/busi128 preset=base num_workers=8 use_gpu=true \\
        storage_path=/mnt/shared/runs run_name=pretrain-base out=/mnt/shared/models/pretrain-base \\
        --results-fp /mnt/shared/results/pretrain-base.json

or locally with the package installed: ``python jobs/pretrain.py --config platform/busgen/configs/pretrain_tiny.yaml
data_dir=data/phantom``. Re-running with the same ``run_name`` and ``storage_path`` resumes from the
latest checkpoint, so a larger ``max_steps`` continues a finished run and a crashed job is restarted by
submitting it again. ``busgen config show pretrain`` lists every setting.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("pretrain"))
