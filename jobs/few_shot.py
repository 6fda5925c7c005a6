"""Few-shot sweep as a Ray job: adapt with K in {5, 10, 20, 50} and score each K (``busgen.eval.fewshot``).

    ray job submit --working-dir . -- python jobs/few_shot.py --config evals/suites/few_shot.yaml \\
        base=/mnt/shared/models/pretrain target_dir=/mnt/shared/datasets/site_b \\
        reference_dir=/mnt/shared/datasets/site_a out=/mnt/shared/results/few_shot
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from busgen.core.raylocal import init_ray  # noqa: E402
from busgen.eval.fewshot import FewShotConfig, run_few_shot  # noqa: E402
from jobs import _common  # noqa: E402


def main(cfg: FewShotConfig) -> dict:
    cfg = cfg.model_copy(
        update={
            k: _common.resolve_location(getattr(cfg, k))
            for k in ("base", "target_dir", "reference_dir", "out", "storage_path")
        }
    )
    init_ray()
    rows = run_few_shot(cfg)
    return {f"domain_score_k{r['shots']}": r["domain_score"] for r in rows} | {
        f"fid_k{r['shots']}": r["fid"] for r in rows
    }


if __name__ == "__main__":
    sys.exit(_common.run_job("few_shot", FewShotConfig, main))
