"""Autoencoder training as a Ray job: ``busgen.train.autoencoder`` on Ray Train, then the folder part.

The first stage of a latent generator; the second is ``jobs/pretrain.py autoencoder=<out>``::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/autoencoder.py --config platform/busgen/configs/autoencoder_tiny.yaml \\
        data_dir=/mnt/shared/data/busi128 image_size=128 factor=8 num_workers=8 use_gpu=true \\
        storage_path=/mnt/shared/runs out=/mnt/shared/models/ae128

Same ``run_name`` and ``storage_path`` resumes. ``busgen config show autoencoder`` lists every setting.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("autoencoder"))
