"""A servable diagnosis classifier as a Ray job: ``busgen.measure.classifier_fit`` (yardstick recipe), in-process.

Submit to a cluster (paths on storage every node mounts)::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/train_classifier.py --data-dir /mnt/shared/data/busi64 --out /mnt/shared/models/clf-busi \\
        --results-fp /mnt/shared/results/clf-busi.json

or locally: ``python jobs/train_classifier.py --data-dir runs/data/busi64 --out runs/clf``. The folder it writes
(``model.safetensors``, ``classifier.json``, ``README.md``) is what ``busgen serve --classifier`` loads.
``busgen config show train-classifier`` lists every setting.
"""

import sys

from busgen.jobrun import run_job

if __name__ == "__main__":
    sys.exit(run_job("train-classifier"))
