"""Generation throughput: the Ray Data pipeline vs a plain in-process loop, and driver memory vs N.

Same model, sampler, steps and batch size on both sides. The Ray side runs the full
`busgen.generate.shards` pipeline (one sampler actor using all cores, shards, manifest);
the loop side calls `Generator.sample` over the same batches and encodes PNGs, without
Ray Data, inside a Ray task so both run at Ray's worker priority. Both are measured
steady (from the first finished shard's worth of rows) and end to end (model load, and
for Ray the actor start, included), alternating in one run, best of ``--rounds``; the
headline ratio is steady. Then driver peak RSS is measured in fresh processes at N and
10*N (goal: flat, since images stream from actors to shard files).

    python evals/benchmarks/generate_throughput.py                 # defaults, < 10 min on 2 cores
    python evals/benchmarks/generate_throughput.py --n 256 --steps 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, headline, peak_rss_mib, run_isolated  # noqa: E402


def loop_throughput(model_dir: Path, n: int, steps: int, batch_size: int, shard_size: int) -> tuple[float, float]:
    """(steady, end-to-end) images/s of a plain loop over the same rows and batches, PNG encoding included.

    End to end includes loading the model; steady counts from the end of the first
    ``shard_size`` rows, as the pipeline's steady rate counts from its first finished shard.
    """
    import torch

    from busgen.data.imageio import encode_png
    from busgen.generate.shards import RowPlan
    from busgen.model import generator

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    gen = generator.load(model_dir)
    plan = RowPlan.build(n, 0, {c: 1.0 for c in gen.class_names}, None)
    t_first = None
    for s in range(0, n, batch_size):
        labels, domains, seeds = zip(*(plan.row(i) for i in range(s, min(s + batch_size, n))))
        boxes = gen.resolve_boxes(labels, None, seeds)
        images = gen.sample(list(labels), list(domains), boxes, steps=steps, seeds=list(seeds), batch_size=batch_size)
        [encode_png(im) for im in images]
        if t_first is None and s + batch_size >= shard_size:
            t_first, rows_first = time.time(), min(s + batch_size, n)
    t_end = time.time()
    return (n - rows_first) / (t_end - t_first), n / (t_end - t0)


def in_ray_worker(fn, *args):
    """Run ``fn(*args)`` as a one-CPU Ray task: the loop then runs at the sampler actor's priority.

    Ray starts every worker at nice 15 (``RAY_worker_niceness``); measured in the nice-0
    driver, the loop would win every fight for a core against the actor whenever anything
    else runs on the machine, and the ratio would measure the machine's load.
    """
    import ray

    return ray.get(ray.remote(num_cpus=1)(fn).remote(*args))


def ray_throughput(
    model_dir: Path, out: Path, n: int, steps: int, batch_size: int, shard_size: int
) -> tuple[float, float]:
    """(steady, end-to-end) images/s of ``busgen.generate.shards``: end to end includes actor start and model load."""
    from busgen.generate.shards import GenerateConfig, generate

    cfg = GenerateConfig(
        model=str(model_dir),
        out=str(out),
        n=n,
        steps=steps,
        batch_size=batch_size,
        shard_size=shard_size,
        concurrency=1,
        num_cpus=1,
        torch_threads=os.cpu_count() or 1,
    )
    summary = generate(cfg, progress=False)
    return summary.steady_images_per_s, summary.images_per_s


def child(args) -> dict:
    from busgen.core.raylocal import init_ray
    from busgen.generate.shards import GenerateConfig, generate

    init_ray(num_cpus=4)
    cfg = GenerateConfig(
        model=args.model,
        out=args.child,
        n=args.n,
        steps=args.steps,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )
    generate(cfg, progress=False)
    return {"n": args.n, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)  # large enough that actor start-up is not most of the Ray time
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="alternating loop/ray measurements; best of each")
    ap.add_argument("--model", type=str, default=None, help="model dir (default: an untrained tiny export)")
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit_result(child(args))
        return
    from busgen.core.raylocal import init_ray
    from busgen.testing.models import export_untrained

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else export_untrained(Path(tmp) / "model")
        init_ray(num_cpus=4)
        # both sides alternate in one run (the machine is shared and noisy): best of ``--rounds`` each
        loops, rays = [], []
        for r in range(args.rounds):
            loops.append(in_ray_worker(loop_throughput, model, args.n, args.steps, args.batch_size, args.shard_size))
            rays.append(
                ray_throughput(model, Path(tmp) / f"ray{r}", args.n, args.steps, args.batch_size, args.shard_size)
            )
            print(
                f"round {r + 1}: loop {loops[-1][0]:.2f} img/s steady, {loops[-1][1]:.2f} end to end; "
                f"ray data {rays[-1][0]:.2f} steady, {rays[-1][1]:.2f} end to end",
                flush=True,
            )
        loop, loop_e2e = max(x[0] for x in loops), max(x[1] for x in loops)
        steady, e2e = max(x[0] for x in rays), max(x[1] for x in rays)
        import ray

        ray.shutdown()
        rss = [
            run_isolated(
                __file__,
                "--n",
                str(k * args.n),
                "--steps",
                "1",
                "--batch-size",
                str(args.batch_size),
                "--shard-size",
                str(args.shard_size),
                "--model",
                str(model),
                "--child",
                str(Path(tmp) / f"rss{k}"),
            )
            for k in (1, 10)
        ]
    print(
        f"loop: {loop:.2f} img/s steady, {loop_e2e:.2f} end to end (model load included); "
        f"ray data: {steady:.2f} img/s steady, {e2e:.2f} end to end (actor start and model load included); "
        f"end-to-end ratio {e2e / loop_e2e:.2f}"
    )
    print(
        f"driver peak RSS: {rss[0]['peak_rss_mib']:.0f} MiB at n={rss[0]['n']}, "
        f"{rss[1]['peak_rss_mib']:.0f} MiB at n={rss[1]['n']}"
    )
    headline(
        "generate_throughput",
        steady / loop,
        f"steady: ray {steady:.2f} img/s, loop {loop:.2f} img/s; end to end {e2e / loop_e2e:.2f} "
        f"(ray {e2e:.2f}, loop {loop_e2e:.2f}); {args.steps} DDIM steps, batch {args.batch_size}, "
        f"shards of {args.shard_size}, best of {args.rounds}; "
        f"driver RSS {rss[0]['peak_rss_mib']:.0f} MiB at N={rss[0]['n']} vs {rss[1]['peak_rss_mib']:.0f} MiB at 10N",
    )


if __name__ == "__main__":
    main()
