"""Ingest memory benchmark: driver peak RSS when ingesting N vs 10*N phantom images.

Ingest streams image bytes through Ray Data tasks; the driver only holds file
names and small metadata columns, so its peak memory should stay nearly flat as
the dataset grows. Headline: ratio = peak RSS at 10*N / peak RSS at N (goal ~1).

    python evals/benchmarks/ingest_memory.py            # N=1000 and 10000, 64 px
    python evals/benchmarks/ingest_memory.py --n 200    # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, headline, peak_rss_mib, run_isolated  # noqa: E402


def measure(n: int, size: int, work: Path) -> dict:
    """Child process: write n phantom images, ingest them, report driver peak RSS."""
    from busgen.core.raylocal import init_ray
    from busgen.data.ingest import IngestConfig, ingest
    from busgen.data.phantom import write_phantom

    src = write_phantom(work / f"src_{n}", n, size, seed=0)
    init_ray(num_cpus=4)
    rss_before = peak_rss_mib()
    t0 = time.time()
    summary = ingest(src, work / f"ds_{n}", IngestConfig(size=size), progress=False)
    return {
        "n": n,
        "ingested": summary.n_ingested,
        "seconds": time.time() - t0,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_start_mib": rss_before,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit_result(measure(args.n, args.size, Path(args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small = run_isolated(__file__, "--n", str(args.n), "--size", str(args.size), "--child", tmp)
        large = run_isolated(__file__, "--n", str(10 * args.n), "--size", str(args.size), "--child", tmp)
    for r in (small, large):
        print(
            f"n={r['n']}: ingested {r['ingested']} in {r['seconds']:.1f}s ({r['n'] / r['seconds']:.0f} img/s), "
            f"driver peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    headline(
        "ingest_memory",
        ratio,
        f"driver peak RSS {small['peak_rss_mib']:.0f} MiB at n={small['n']}, "
        f"{large['peak_rss_mib']:.0f} MiB at n={large['n']}",
    )


if __name__ == "__main__":
    main()
