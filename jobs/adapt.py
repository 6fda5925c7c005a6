"""Few-shot adaptation as a Ray job: ``busgen.train.adapt`` (K-shot support set, LoRA or full fine-tune on Ray Train).

    ray job submit --working-dir . -- python jobs/adapt.py --config evals/suites/adapt_small.yaml \\
        base=/mnt/shared/models/pretrain data_dir=/mnt/shared/datasets/site2 out=/mnt/shared/models/site2-k10 \\
        shots=10 method=lora num_workers=1 use_gpu=true --results-fp /mnt/shared/results/adapt-site2.json

or locally without ``ray job submit --working-dir . --``. The adapted folder records its base
model and the support images (``support.json``) so evaluation never tests on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from busgen.core.raylocal import init_ray  # noqa: E402
from busgen.train.adapt import SUPPORT_JSON, AdaptConfig, adapt  # noqa: E402
from jobs import _common  # noqa: E402


def main(cfg: AdaptConfig) -> dict:
    cfg = cfg.model_copy(
        update={k: _common.resolve_location(getattr(cfg, k)) for k in ("base", "data_dir", "out", "storage_path")}
    )
    init_ray()
    out = adapt(cfg)
    support = json.loads((out / SUPPORT_JSON).read_text())
    meta = json.loads((out / "busgen.json").read_text())
    return {
        "out": str(out),
        "method": cfg.method,
        "shots": cfg.shots,
        "support_images": len(support["images"]),
        "classes": ",".join(meta["class_names"]),
        "model_id": meta["model_id"],
        "train_steps": meta.get("train_steps"),
    }


if __name__ == "__main__":
    sys.exit(_common.run_job("adapt", AdaptConfig, main))
