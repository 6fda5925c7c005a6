"""CPSample overhead: protected img/s over unprotected img/s, same model, sampler, steps, batch and seeds.

Protection adds, per step, one forward and one backward pass of the small protection
classifier (at threshold 0.5 it guides every image, the worst case: the gradient is always
computed, gated or not). Sampling cost does not depend on what the weights learned, so an
untrained ``tiny`` export and an untrained classifier measure it honestly. Both sides run
in this process, alternating, best of ``--rounds``. Goal (issue 15): ratio >= 0.6.

Usage: python evals/benchmarks/cpsample_overhead.py [--size 32] [--n 16] [--steps 10] [--rounds 2]
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
    args = p.parse_args()

    import torch

    from busgen.model import generator, protect
    from busgen.model.smoke import export_untrained

    with tempfile.TemporaryDirectory() as tmp:
        folder = export_untrained(Path(tmp) / "m", size=args.size)
        gen = generator.load(folder, device="cpu")
        torch.manual_seed(0)
        net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=args.size, width=args.width))
        protect.save_protector(folder, net, {"generator_model_id": gen.model_id})
        labels = ["benign", "malignant"] * (args.n // 2)
        kw = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=0, batch_size=args.n)
        on = dict(protect="cpsample", protect_strength=100.0, protect_threshold=0.5)
        gen.sample(labels[:2], **{**kw, "steps": 1}, **on)  # warm-up (loads the classifier)
        best = {"none": float("inf"), "cpsample": float("inf")}
        for _ in range(args.rounds):
            for name, extra in (("none", {}), ("cpsample", on)):
                t0 = time.perf_counter()
                gen.sample(labels, **kw, **extra)
                best[name] = min(best[name], time.perf_counter() - t0)
    off_ips, on_ips = len(labels) / best["none"], len(labels) / best["cpsample"]
    headline(
        "cpsample_overhead",
        on_ips / off_ips,
        f"protected {on_ips:.2f} img/s vs unprotected {off_ips:.2f} img/s; tiny UNet at {args.size} px, "
        f"{args.sampler} {args.steps} steps, CFG {args.guidance}, batch {len(labels)}, classifier width {args.width}, "
        f"every image guided, best of {args.rounds}, {torch.get_num_threads()} threads, CPU",
    )


if __name__ == "__main__":
    main()
