"""Sampling throughput, MFU and fidelity of ``Generator.sample`` (DDIM + guidance), before and after each switch.

Runs without Ray (bare GPU machines have none). Switches, cumulatively:

1. as shipped before: fp32 weights and activations
2. bf16 autocast around the fp32 model (what the first H100 measurement tried)
3. bf16 weights (``Generator.optimize(precision=bf16)``), fp32 running latent
4. + channels_last
5. + torch.compile (on CUDA; on CPU only with ``--compile``: minutes to compile)
6. + CUDA graphs (``compile(mode="reduce-overhead")``, CUDA only)

Every row also reports the mean absolute pixel difference (grey levels, uint8) from the
fp32 images on the same seeds: the quality guard is < 2 at 25 steps on a *trained*
model (``--model DIR``). The default random-weight model is chaotic (a 2^-9 weight
perturbation moves it ~20 grey levels), so its difference says nothing about quality.
FLOPs come from ``torch.utils.flop_counter`` on one guided forward; MFU against
``--peak-tflops`` (default 790, the H100 bf16 dense figure, on CUDA; none on CPU).

    python evals/benchmarks/gpu_sample.py                          # CPU smoke, or base 128 px batch 256 on CUDA
    python evals/benchmarks/gpu_sample.py --model models/busi --batch 256 --json out/gpu_sample.json

Students (``busgen distill``): with every switch on, each student samples the same batch at its own
step count with one forward per step (``--students DIR`` loads the folders; by default random-weight
students of the model at ``--student-steps`` 4 2 1: cost does not depend on what the weights learned).

Last line: ``gpu_sample ratio=X (...)``, X = img/s with every switch / img/s as shipped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline  # noqa: E402
from _gpu_common import (  # noqa: E402
    assert_no_ray,
    count_flops,
    default_peak,
    make_row,
    pick_device,
    rows_json,
    timed,
    write_json,
)


def variants(cuda: bool, compile_on: bool, graphs_on: bool) -> list[tuple[str, dict | None, bool]]:
    """(name, AccelConfig fields or None for the fp32 model as loaded, autocast around it)."""
    out = [
        ("as shipped (fp32)", None, False),
        ("bf16 autocast, fp32 weights", None, True),
        ("bf16 weights", {"precision": "bf16", "channels_last": "off", "compile": "off"}, False),
        ("+ channels_last", {"precision": "bf16", "channels_last": "on", "compile": "off"}, False),
    ]
    if compile_on:
        out.append(("+ torch.compile", {"precision": "bf16", "channels_last": "on", "compile": "on"}, False))
    if graphs_on and cuda:
        graphs = {"precision": "bf16", "channels_last": "on", "compile": "on", "cuda_graphs": True}
        out.append(("+ CUDA graphs", graphs, False))
    return out


def main() -> None:
    from busgen.model import accel, diffusion, generator
    from busgen.testing.models import export_untrained

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--model", default=None, help="exported model dir (default: random weights at --preset/--size)")
    ap.add_argument("--preset", default=None, help="for the random model (default: base on CUDA, tiny on CPU)")
    ap.add_argument("--size", type=int, default=None, help="px (default: 128 on CUDA, 16 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="images per call (default: 256 on CUDA, 4 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: 25 on CUDA, 3 on CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls (default: 3 on CUDA, 1 on CPU)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on on CUDA")
    ap.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True, help="CUDA only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: 790 on CUDA)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--students", default=None, help="folder of busgen distill's student folders")
    ap.add_argument("--student-steps", type=int, nargs="*", default=[4, 2, 1], help="random-weight students' steps")
    args = ap.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.preset = args.preset or ("base" if cuda else "tiny")
    args.size = args.size or (128 if cuda else 16)
    args.batch = args.batch or (256 if cuda else 4)
    args.steps = args.steps or (25 if cuda else 3)
    args.repeats = args.repeats or (3 if cuda else 1)
    compile_on = cuda if args.compile is None else args.compile
    peak = default_peak(device, args.peak_tflops)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or export_untrained(Path(tmp) / "model", size=args.size, preset=args.preset)
        ref = generator.load(model_dir, device=device)
        labels = [ref.class_names[i % len(ref.class_names)] for i in range(args.batch)]
        seeds = list(range(args.batch))
        print(f"gpu_sample on {torch.cuda.get_device_name(device) if cuda else 'cpu'}: {ref.image_size} px, batch "
              f"{args.batch}, DDIM {args.steps} + guidance, peak {peak or 'n/a'} TFLOP/s, "
              f"{'trained' if args.model else 'random-weight'} model", flush=True)  # fmt: skip
        flops = count_flops(lambda: guided_forward(ref, diffusion, args.batch, device)) * args.steps / args.batch
        base_images, rows = None, []
        for name, fields, autocast in variants(cuda, compile_on, args.cuda_graphs):
            opt = None if fields is None else accel.AccelConfig(**fields)
            gen = ref if opt is None else generator.load(model_dir, device=device, optimize=opt)
            ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if autocast else nullcontext

            def run(gen=gen, ctx=ctx):
                with ctx():
                    return gen.sample(labels, steps=args.steps, seeds=seeds, batch_size=args.batch)

            images = run()  # warm-up (and compilation); also the images the guard compares
            dt = timed(run, device, args.repeats)
            base_images = images if base_images is None else base_images
            diff = float(np.abs(images.astype(np.float64) - base_images).mean())
            row = make_row(name, args.batch * args.repeats / dt, flops, peak, f"|diff| {diff:.2f} grey levels")
            print(row.line(), flush=True)
            rows.append(row)
        switches = [f for _, f, _ in variants(cuda, compile_on, args.cuda_graphs)][-1]
        for name, st in students(ref, args, device, accel.AccelConfig(**switches)):
            st_flops = count_flops(lambda st=st: student_forward(st, args.batch, device)) / args.batch
            steps = st.default_steps

            def run(st=st):
                return st.sample(labels, seeds=seeds, batch_size=args.batch)

            run()
            dt = timed(run, device, args.repeats)
            row = make_row(f"{name}, every switch", args.batch * args.repeats / dt, st_flops * steps, peak, "")
            print(row.line(), flush=True)
            rows.append(row)
    assert_no_ray()
    first = rows[0]
    last = [r for r in rows if "student" not in r.name][-1]
    payload = {"device": str(device), "args": vars(args), "flops_per_image": flops, "rows": rows_json(rows)}
    write_json(args.json, payload)
    mfu = f"{100 * last.mfu:.1f}% MFU" if last.mfu is not None else "MFU n/a on CPU"
    headline(
        "gpu_sample",
        last.images_per_s / first.images_per_s,
        f"{last.images_per_s:.1f} img/s, {last.tflops:.2f} TFLOP/s, {mfu} with every switch vs "
        f"{first.images_per_s:.1f} img/s fp32; {ref.image_size} px batch {args.batch} DDIM {args.steps} + guidance on "
        f"{device.type}; {last.note}; {flops / 1e9:.2f} GFLOP/image",
    )


def students(ref, args, device, switches):
    """(name, Generator) of every student: loaded from ``--students``, or random-weight ones of ``ref``."""
    from busgen.model import diffusion, distill, generator

    if args.students:
        for meta_fp in sorted(Path(args.students).glob("*/busgen.json")):
            gen = generator.load(meta_fp.parent, device=device, optimize=switches)
            yield f"student {meta_fp.parent.name} ({gen.default_steps} steps)", gen
        return
    for steps in args.student_steps:
        net = distill.GuidanceUNet.from_teacher(ref.model.float().cpu(), (1.0, 3.0)).to(device)
        gen = generator.Generator(
            net, diffusion.DiffusionConfig(prediction_type="v_prediction"), ref.class_names, ref.domain_names,
            ref.box_prior, "random-student", meta={"sampling": {"sampler": "ddim", "steps": steps}},
        )  # fmt: skip
        yield f"student {steps} steps (random weights)", gen.optimize(switches)


def student_forward(gen, batch: int, device: torch.device):
    """One student UNet forward (guidance is an input: one half, no doubled batch)."""
    size = gen.image_size
    x = torch.zeros((batch, 1, size, size), device=device, dtype=next(gen.model.parameters()).dtype)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.inference_mode():
        return gen.model(x, torch.tensor(500, device=device), labels, labels, torch.zeros_like(x), guidance=1.8)


def guided_forward(gen, diffusion, batch: int, device: torch.device):
    """One classifier-free-guided UNet forward (both halves) at ``batch`` images: what one sampling step costs."""
    size = gen.image_size
    x = torch.zeros((batch, 1, size, size), device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.inference_mode():
        return diffusion.guided_prediction(
            gen.model, x, torch.tensor(500, device=device), labels, labels, torch.zeros_like(x), 1.8
        )


if __name__ == "__main__":
    main()
