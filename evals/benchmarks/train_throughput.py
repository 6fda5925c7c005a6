"""Pretraining throughput: 1 vs 2 Ray Train DDP workers on the tiny 32 px generator.

Weak scaling: the batch is fixed *per worker* (16 images), so 2 workers train on a
global batch of 32 per step. Each worker gets 1 CPU and 1 torch thread (Ray's
default), so on a 2-core machine the 2-worker run uses both cores and the 1-worker
run one. Throughput is the run-average images/s reported by rank 0, counted from the
end of the first step (excludes model build, the first batch and allocator warm-up),
including data loading and DDP gradient all-reduce (gloo on CPU).

    python evals/benchmarks/train_throughput.py      # < 10 min on 2 cores

Last line: ``train_throughput ratio=X (2 workers A img/s, 1 worker B img/s)``, X = A / B.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from _common import headline  # noqa: E402

N_IMAGES = 256  # phantom train set (32 px)
BATCH_PER_WORKER = 16
STEPS = 30


def measure(data_dir: Path, work: Path, num_workers: int) -> float:
    """Run-average images/s of one short pretraining run with ``num_workers`` DDP workers."""
    from busgen.train.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data_dir=str(data_dir),
        num_workers=num_workers,
        cpus_per_worker=1,
        batch_size=BATCH_PER_WORKER,
        max_steps=STEPS,
        checkpoint_every=STEPS,
        warmup_steps=5,
        log_every=10,
        storage_path=str(work / "runs"),
        run_name=f"throughput-{num_workers}w-{time.time_ns()}",
        out=str(work / f"model{num_workers}"),
    )
    t0 = time.time()
    result = pretrain(cfg)
    if result.error is not None:
        raise RuntimeError(f"{num_workers}-worker run failed: {result.error}")
    rate = float(result.metrics["images_per_s_run"])
    print(
        f"{num_workers} worker(s): {rate:.1f} img/s over {STEPS} steps (fit + export {time.time() - t0:.0f} s)",
        flush=True,
    )
    return rate


def main() -> None:
    from helpers.data import write_phantom_dataset

    from busgen.core.raylocal import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = write_phantom_dataset(work / "data", N_IMAGES, size=32, styles=("a", "b"))
        # 4 logical CPUs on 2 cores: both workers hold one CPU each and Ray Data's read
        # tasks still get a slot (with exactly 2 they would starve, see shared NOTES.md);
        # quiet: worker logs arriving late would otherwise follow the headline line
        init_ray(num_cpus=4, object_store_mb=512, quiet=True)
        one = measure(data_dir, work, 1)
        two = measure(data_dir, work, 2)
        import ray

        ray.shutdown()
    headline("train_throughput", two / one, f"2 workers {two:.1f} img/s, 1 worker {one:.1f} img/s")


if __name__ == "__main__":
    main()
