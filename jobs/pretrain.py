"""Generator pretraining as a Ray job: ``busgen.train.pretrain.pretrain`` on Ray Train, then export.

Submit to a cluster (paths on storage every node mounts, e.g. EFS/FSx at /mnt/shared)::

    ray job submit --working-dir . -- python jobs/pretrain.py --config evals/suites/pretrain_tiny.yaml \\
        data_dir=/mnt/shared/data/busi128 preset=base num_workers=8 use_gpu=true \\
        storage_path=/mnt/shared/runs run_name=pretrain-base out=/mnt/shared/models/pretrain-base \\
        --results-fp /mnt/shared/results/pretrain-base.json

or locally, from the repo root with the package installed (``pip install -e .``)::

    python jobs/pretrain.py --config evals/suites/pretrain_tiny.yaml data_dir=data/phantom

Re-running with the same ``run_name`` and ``storage_path`` resumes from the latest
checkpoint (Ray Train V2 resumes by run name), so a larger ``max_steps`` continues a
finished run and a crashed job is restarted by submitting it again. The job prints one
``BUSGEN_JOB pretrain status=...`` line and exits non-zero on failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from busgen.core.raylocal import init_ray  # noqa: E402
from busgen.model import generator  # noqa: E402
from busgen.train.pretrain import PretrainConfig, pretrain  # noqa: E402
from jobs import _common  # noqa: E402


def resolve_paths(cfg: PretrainConfig) -> PretrainConfig:
    """Absolute paths: Ray workers run in another working directory than the driver."""
    return cfg.model_copy(
        update={k: _common.resolve_location(getattr(cfg, k)) for k in ("data_dir", "storage_path", "out")}
    )


def main(cfg: PretrainConfig) -> dict:
    cfg = resolve_paths(cfg)
    init_ray()
    result = pretrain(cfg)
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    gen = generator.load(cfg.out, device="cpu")
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and k != "epoch"}
    return {
        **metrics,
        "out": cfg.out,
        "model_id": gen.model_id,
        "run_name": cfg.run_name,
        "classes": ",".join(gen.class_names),
        "domains": ",".join(gen.domain_names),
    }


if __name__ == "__main__":
    sys.exit(_common.run_job("pretrain", PretrainConfig, main))
