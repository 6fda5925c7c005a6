"""CPSample overhead: protected img/s over unprotected img/s, same model, sampler, steps, batch and seeds.

Protection adds, per step inside its timestep window, one forward and one backward pass of
the small protection classifier (at threshold 0.5 an untrained classifier guides every image,
the worst case: the backward pass is skipped only when no image in the batch is confident).
Sampling cost does not depend on what the weights learned, so an untrained ``tiny`` export
and an untrained classifier measure it honestly. Three settings run in this process,
alternating, best of ``--rounds``: unprotected, protected at every step (window 0-1, the
method before the window existed) and protected in ``--window`` (the library default).
Headline: the windowed ratio. Goal (issue 15): ratio >= 0.6.

Usage: python evals/benchmarks/cpsample_overhead.py [--size 32] [--n 16] [--steps 10] [--rounds 2]
       [--window LO HI] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import headline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--guidance", type=float, default=1.8)
    p.add_argument("--width", type=int, default=32, help="protection classifier width (the training default)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--window", type=float, nargs=2, default=None, help="protection window (default: the library's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    args = p.parse_args()

    import torch

    from busgen.core.types import DEFAULT_PROTECT_WINDOW

    torch.set_num_threads(args.threads)
    window = tuple(args.window) if args.window else DEFAULT_PROTECT_WINDOW

    from busgen.model import generator, protect
    from busgen.testing.models import export_untrained

    with tempfile.TemporaryDirectory() as tmp:
        folder = export_untrained(Path(tmp) / "m", size=args.size)
        gen = generator.load(folder, device="cpu")
        torch.manual_seed(0)
        net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=args.size, width=args.width))
        protect.save_protector(folder, net, {"generator_model_id": gen.model_id})
        labels = ["benign", "malignant"] * (args.n // 2)
        kw = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=0, batch_size=args.n)
        on = dict(protect="cpsample", protect_strength=0.1, protect_threshold=0.5)
        settings = {
            "none": {},
            "every step": {**on, "protect_window": (0.0, 1.0)},
            "window": {**on, "protect_window": window},
        }
        gen.sample(labels[:2], **{**kw, "steps": 1}, **on)  # warm-up (loads the classifier)
        best = {name: float("inf") for name in settings}
        for _ in range(args.rounds):
            for name, extra in settings.items():
                t0 = time.perf_counter()
                gen.sample(labels, **kw, **extra)
                best[name] = min(best[name], time.perf_counter() - t0)
    ips = {name: len(labels) / sec for name, sec in best.items()}
    before = ips["every step"] / ips["none"]
    print(f"cpsample every step (window 0-1): ratio={before:.2f} ({ips['every step']:.2f} img/s)", flush=True)
    headline(
        "cpsample_overhead",
        ips["window"] / ips["none"],
        f"protected in window {window[0]:g}-{window[1]:g} {ips['window']:.2f} img/s vs unprotected "
        f"{ips['none']:.2f} img/s (every step: {ips['every step']:.2f} img/s, ratio {before:.2f}); tiny UNet at "
        f"{args.size} px, {args.sampler} {args.steps} steps, CFG {args.guidance}, batch {len(labels)}, classifier "
        f"width {args.width}, every image guided, best of {args.rounds}, {torch.get_num_threads()} threads, CPU",
    )


if __name__ == "__main__":
    main()
