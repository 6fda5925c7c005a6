"""The million-row proof: generation at scale keeps driver and object-store memory flat, and resumes exactly.

A random-weight micro model (16 px, two 8-channel levels, no attention; 1 DDIM step,
no guidance) makes each row cost what the *pipeline* costs (row plan, box prior, PNG,
hash, Parquet, Ray Data) rather than what a UNet costs. Every run is a fresh driver
process (``--child``), so each peak RSS is its own; a thread samples the object store's
used bytes every 0.2 s. Measured:

1. N = ``--baseline-n`` (10,000) and N = ``--n``: wall time, shards, manifest size,
   driver peak RSS, object-store peak;
2. kill-and-resume at N: the driver is SIGKILLed once half the shards exist, the same
   command is run again, and the output must hold exactly N unique indices 0..N-1.

    python evals/benchmarks/million_rows.py                 # N = 100,000 vs 10,000: < 10 min on 2 cores
    python evals/benchmarks/million_rows.py --n 1000000     # the full proof (see docs in the closing note)

Last line: ``million_rows ratio=X (...)``, X = driver peak RSS at N / at the baseline N (flat = ~1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, headline, peak_rss_mib, run_isolated  # noqa: E402


def export_micro(out: Path) -> Path:
    """The smallest useful generator: random weights, 16 px, no attention (pipeline cost, not UNet cost)."""
    import torch

    from busgen.data.imageio import mask_to_box
    from busgen.data.phantom import CLASSES, make_phantom_arrays
    from busgen.model import boxprior, generator, unet

    torch.manual_seed(0)
    cfg = unet.ModelConfig(
        image_size=16, block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4,
    )  # fmt: skip
    model = unet.build_model(cfg, len(CLASSES), 1)
    _, masks, labels = make_phantom_arrays(30, 16, seed=0)
    prior = boxprior.fit([mask_to_box(m) for m in masks], labels)
    return generator.export_model(out, model, None, cfg, CLASSES, ["phantom"], prior, "untrained", 0)


def gen_config(args, out: str):
    from busgen.generate.shards import GenerateConfig

    return GenerateConfig(
        model=args.model, out=out, n=args.n, steps=1, guidance=1.0, shard_size=args.shard_size,
        batch_size=args.batch_size, concurrency=1, num_cpus=1, torch_threads=os.cpu_count() or 1,
    )  # fmt: skip


class StorePeak(threading.Thread):
    """Samples the object store's used bytes (all nodes) until stopped; keeps the peak."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.peak, self.samples, self._halt = every, 0, 0, threading.Event()

    def run(self) -> None:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address()
        while not self._halt.is_set():
            try:
                used = get_memory_info_reply(state, timeout_seconds=5).store_stats.object_store_bytes_used
                self.peak, self.samples = max(self.peak, int(used)), self.samples + 1
            except Exception:  # noqa: BLE001 -- a missed sample is not a failed benchmark
                pass
            self._halt.wait(self.every)

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=10)
        return self.peak


def child(args) -> dict:
    """One generation run in this (fresh) process: the numbers one row of the table needs."""
    import warnings

    from busgen.core.raylocal import init_ray
    from busgen.generate.shards import MANIFEST, generate

    init_ray(num_cpus=4, object_store_mb=512, quiet=True)
    store = StorePeak()
    store.start()
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resumed run takes over the killed run's lock: expected here
        summary = generate(gen_config(args, args.child), progress=False)
    wall = time.time() - t0
    out = Path(args.child)
    return {
        "n": args.n,
        "wall_s": wall,
        "generated": summary.generated,
        "skipped": summary.skipped,
        "steady_images_per_s": summary.steady_images_per_s,
        "shards": len(list(out.glob("shard-*.parquet"))),
        "manifest_bytes": (out / MANIFEST).stat().st_size,
        "driver_peak_rss_mib": peak_rss_mib(),
        "store_peak_mib": store.stop() / 2**20,
        "store_samples": store.samples,
    }


def child_cmd(args, n: int, out: Path) -> list[str]:
    return [__file__, "--n", str(n), "--shard-size", str(args.shard_size), "--batch-size", str(args.batch_size),
            "--model", args.model, "--child", str(out)]  # fmt: skip


def kill_halfway(args, out: Path, n: int) -> int:
    """Start a run, SIGKILL its driver once half the shards exist; returns the shards found after the kill."""
    shards_total = -(-n // args.shard_size)
    proc = subprocess.Popen([sys.executable, *child_cmd(args, n, out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 3600
    while time.time() < deadline and proc.poll() is None:
        if len(list(out.glob("shard-*.parquet"))) >= shards_total // 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started (its Ray runtime included)
    proc.wait(timeout=60)
    return len(list(out.glob("shard-*.parquet")))


def unique_indices(out: Path) -> tuple[int, int, bool]:
    """(rows, unique indices, indices == 0..rows-1) over every shard, read column by column."""
    import numpy as np
    import pyarrow.dataset as pads

    from busgen.data import schema as S

    idx = pads.dataset(sorted(map(str, out.glob("shard-*.parquet")))).to_table(columns=[S.INDEX])
    values = np.sort(idx.column(S.INDEX).to_numpy())
    return len(values), len(np.unique(values)), bool(np.array_equal(values, np.arange(len(values))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="rows of the large run (1000000 for the full proof)")
    ap.add_argument("--baseline-n", type=int, default=10_000)
    ap.add_argument("--shard-size", type=int, default=5_000)
    ap.add_argument("--batch-size", type=int, default=1_000)
    ap.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume run")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit_result(child(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args.model = str(export_micro(work / "model"))
        runs = {}
        for n in (args.baseline_n, args.n):
            runs[n] = run_isolated(*child_cmd(args, n, work / f"n{n}"), timeout=6 * 3600)
            r = runs[n]
            print(f"N={n}: {r['wall_s']:.1f} s ({n / r['wall_s']:.0f} rows/s end to end, "
                  f"{r['steady_images_per_s']:.0f} steady), {r['shards']} shards, manifest {r['manifest_bytes']} B, "
                  f"driver peak RSS {r['driver_peak_rss_mib']:.0f} MiB, object store peak "
                  f"{r['store_peak_mib']:.1f} MiB ({r['store_samples']} samples)", flush=True)  # fmt: skip
        resume = None
        if not args.no_resume:
            out = work / "killed"
            partial = kill_halfway(args, out, args.n)
            r = run_isolated(*child_cmd(args, args.n, out), timeout=6 * 3600)
            rows, unique, exact = unique_indices(out)
            resume = {**r, "shards_at_kill": partial, "rows": rows, "unique": unique, "exact": exact}
            print(f"kill-and-resume at N={args.n}: killed with {partial} shards on disk, resumed run skipped "
                  f"{r['skipped']} rows and generated {r['generated']}; {rows} rows, {unique} unique indices, "
                  f"exactly 0..N-1: {exact}", flush=True)  # fmt: skip
            if not (exact and rows == args.n):
                raise SystemExit(f"error: resume left {rows} rows ({unique} unique), expected exactly {args.n}")
    base, big = runs[args.baseline_n], runs[args.n]
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "resume": resume}, indent=2))
    resumed = f"; kill at {resume['shards_at_kill']} shards + resume: exactly N unique" if resume else ""
    headline(
        "million_rows",
        big["driver_peak_rss_mib"] / base["driver_peak_rss_mib"],
        f"N={args.n}: {big['wall_s']:.0f} s, {big['shards']} shards, manifest {big['manifest_bytes'] / 1024:.1f} KiB, "
        f"driver RSS {big['driver_peak_rss_mib']:.0f} MiB vs {base['driver_peak_rss_mib']:.0f} MiB at "
        f"N={args.baseline_n}, object store peak {big['store_peak_mib']:.1f} vs {base['store_peak_mib']:.1f} MiB"
        f"{resumed}",
    )


if __name__ == "__main__":
    main()
