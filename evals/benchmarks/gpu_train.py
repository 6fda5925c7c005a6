"""Training throughput and MFU of the project's own ``train_step``, before and after each speed switch.

Runs without Ray (bare GPU machines have none): the model, optimizer, EMA and step come
from ``busgen.train.step`` and batches are synthetic tensors at the model's size, so only
the step is measured. Switches are added one at a time, cumulatively:

1. as shipped before: fp32, NCHW, noise drawn on the host, unfused AdamW, loss read every step
2. + bf16 autocast (fp32 master weights)
3. + channels_last
4. + noise/timesteps/dropout drawn on the device, fused AdamW, loss read only at the end
5. + torch.compile (on CUDA; on CPU only with ``--compile``: minutes to compile)

FLOPs per image are counted once with ``torch.utils.flop_counter`` (forward + backward);
MFU is achieved TFLOP/s over ``--peak-tflops`` (default: 790, the H100 bf16 dense figure,
on CUDA; none on CPU). On CPU the defaults are a smoke size (tiny preset, 16 px).

    python evals/benchmarks/gpu_train.py                                  # CPU smoke, or base 128 px on CUDA
    python evals/benchmarks/gpu_train.py --preset base --size 128 --batch 64 --json out/gpu_train.json

Last line: ``gpu_train ratio=X (...)``, X = img/s with every switch / img/s as shipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def variants(device: torch.device, compile_on: bool) -> list[tuple[str, dict]]:
    """(name, settings) per measured row; each row adds one switch to the previous."""
    base = {"precision": "fp32", "channels_last": "off", "device_rng": False, "fused": "off", "sync": True}
    steps = [
        ("as shipped (fp32, host noise, sync/step)", {}),
        ("+ bf16 autocast", {"precision": "bf16"}),
        ("+ channels_last", {"channels_last": "on"}),
        ("+ device noise, fused AdamW, no sync", {"device_rng": True, "fused": "on", "sync": False}),
    ]
    if compile_on:
        steps.append(("+ torch.compile", {"compile": True}))
    out, cur = [], dict(base, compile=False)
    for name, change in steps:
        cur = {**cur, **change}
        out.append((name, dict(cur)))
    return out


def synthetic_batch(n: int, size: int, num_labels: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, size, size), generator=g) * 2 - 1
    box = torch.zeros((n, 1, size, size))
    box[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1.0
    return x, torch.randint(0, num_labels, (n,), generator=g), torch.zeros(n, dtype=torch.long), box


def measure(args, device: torch.device, name: str, s: dict, peak, flops_per_image: float | None):
    from busgen.model import diffusion
    from busgen.model.accel import AccelConfig
    from busgen.train.checkpoint import make_rngs
    from busgen.train.pretrain import PretrainConfig
    from busgen.train.step import build_components, resolve_training, train_step

    accel = AccelConfig(precision=s["precision"], channels_last=s["channels_last"], compile="off")
    cfg = PretrainConfig(
        data_dir="unused", preset=args.preset, image_size=args.size, batch_size=args.batch, accel=accel,
        fused_adamw=s["fused"], warmup_steps=1, max_steps=10**6,
    )  # fmt: skip
    model, ema, opt, lr_sched = build_components(cfg, 3, 1, device)
    switches = resolve_training(cfg, device)
    gen, _ = make_rngs(0, 0, device if s["device_rng"] else "cpu")
    sched = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    size = model.config.image_size
    batch = synthetic_batch(args.batch, size, 3)
    if device.type == "cuda":
        batch = tuple(t.to(device) for t in batch)  # resident: the step is measured, not the host-side loader
    fwd = torch.compile(model) if s["compile"] else model
    if flops_per_image is None:  # once, on the plain model: FLOPs do not depend on the switches

        def one():
            loss = diffusion.diffusion_loss(model, sched, *to_dev(batch, device), generator=gen)
            loss.backward()

        flops_per_image = count_flops(one) / args.batch
        opt.zero_grad(set_to_none=True)

    def step():
        loss = train_step(fwd, model, sched, opt, lr_sched, ema, batch, cfg, gen, device, switches)
        if s["sync"]:
            float(loss)  # what the loop did before: a host sync every step

    timed(step, device, args.warmup)
    dt = timed(step, device, args.steps)
    row = make_row(name, args.batch * args.steps / dt, flops_per_image, peak)
    print(row.line(), flush=True)
    return row, flops_per_image


def to_dev(batch: tuple, device: torch.device) -> tuple:
    return tuple(t.to(device) for t in batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--preset", default=None, help="model preset (default: base on CUDA, tiny on CPU)")
    ap.add_argument("--size", type=int, default=None, help="px (default: 128 on CUDA, 16 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default: 64 on CUDA, 4 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 2 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on CUDA, 1 on CPU)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on on CUDA")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: 790 on CUDA)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.preset = args.preset or ("base" if cuda else "tiny")
    args.size = args.size or (128 if cuda else 16)
    args.batch = args.batch or (64 if cuda else 4)
    args.steps = args.steps or (30 if cuda else 3)
    args.warmup = args.warmup or (10 if cuda else 1)
    compile_on = cuda if args.compile is None else args.compile
    peak = default_peak(device, args.peak_tflops)
    if not cuda:
        torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"gpu_train on {torch.cuda.get_device_name(device) if cuda else 'cpu'}: {args.preset} {args.size} px, "
          f"batch {args.batch}, {args.steps} timed steps, peak {peak or 'n/a'} TFLOP/s", flush=True)  # fmt: skip
    rows, flops = [], None
    for name, s in variants(device, compile_on):
        row, flops = measure(args, device, name, s, peak, flops)
        rows.append(row)
    assert_no_ray()
    first, last = rows[0], rows[-1]
    payload = {"device": str(device), "args": vars(args), "flops_per_image": flops, "rows": rows_json(rows)}
    write_json(args.json, payload)
    mfu = f"{100 * last.mfu:.1f}% MFU" if last.mfu is not None else "MFU n/a on CPU"
    headline(
        "gpu_train",
        last.images_per_s / first.images_per_s,
        f"{last.images_per_s:.1f} img/s, {last.tflops:.2f} TFLOP/s, {mfu} with every switch vs "
        f"{first.images_per_s:.1f} img/s as shipped; {args.preset} {args.size} px batch {args.batch} on {device.type}; "
        f"{flops / 1e9:.2f} GFLOP/image fwd+bwd",
    )


if __name__ == "__main__":
    main()
