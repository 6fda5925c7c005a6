"""FID drift of the fast sampler: bf16 weights + channels_last vs fp32, same seeds, against held-out real images.

The GPU issue's distribution guard: FID may change by at most 2 %. Runs without Ray (the
GPU machines have none). With no arguments it trains a tiny phantom model for a few seconds
(``busgen.testing.training``) and compares against held-out phantom images; on real data:

    python evals/benchmarks/bf16_fid.py --model runs/gen/busi_tiny --real runs/data/busi64 --n 400
    python evals/benchmarks/bf16_fid.py --model models/busi_base --real data/busi128 --n 2000 --device cuda

``--real`` is an ingested dataset; its val + test splits are the reference (images the
generator never trained on); labels are drawn uniformly from the model's classes.
Last line: ``bf16_fid ratio=X (...)``, X = FID(bf16) / FID(fp32); the guard is |X - 1| <= 0.02.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline  # noqa: E402
from _gpu_common import assert_no_ray, pick_device, write_json  # noqa: E402


def real_reference(args) -> tuple[np.ndarray, list[str] | None]:
    """Held-out real images, and the classes to sample (None = the model's)."""
    if args.real:
        from busgen.measure.arrays import read_splits

        images, labels = read_splits(args.real, ["val", "test"], None)[:2]
        return images, sorted(set(labels))
    from busgen.data.phantom import make_phantom_arrays

    images, _, _ = make_phantom_arrays(args.n * 2, 16, seed=11)  # the smoke model trained on seed 0
    return images, None


def main() -> None:
    from busgen.model import accel, generator
    from busgen.studies.precision import FID_DRIFT_LIMIT, precision_drift

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="exported model dir (default: a 16 px phantom model trained here)")
    ap.add_argument("--real", default=None, help="ingested real dataset; val+test are the reference")
    ap.add_argument("--n", type=int, default=96, help="images per sampler")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps")
    ap.add_argument("--encoder-epochs", type=int, default=20, help="copy encoder (feature) training epochs")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = ap.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from busgen.testing.training import train_phantom_model

            model_dir = train_phantom_model(Path(tmp) / "smoke", size=16, steps=120)
        real, classes = real_reference(args)
        reference = generator.load(model_dir, device=str(device))
        fast_cfg = accel.AccelConfig(precision="bf16", channels_last="on", compile="off")
        fast = generator.load(model_dir, device=str(device), optimize=fast_cfg)
        names = [c for c in (classes or reference.class_names) if c in reference.class_names]
        labels = [names[i % len(names)] for i in range(args.n)]
        drift = precision_drift(reference, fast, real, labels, steps=args.steps, encoder_epochs=args.encoder_epochs)
    write_json(args.json, {"device": str(device), "model": str(args.model), **drift.model_dump()})
    print(f"[bf16_fid] {drift.line()}; sampling {drift.seconds_reference:.1f} s fp32, {drift.seconds_fast:.1f} s bf16")
    assert_no_ray()
    verdict = "within" if drift.within_limit else "OUTSIDE"
    headline(
        "bf16_fid",
        drift.fid_fast / drift.fid_reference,
        f"FID {drift.fid_reference:.3f} -> {drift.fid_fast:.3f}, {verdict} +-{FID_DRIFT_LIMIT:.0%}; "
        f"{drift.mean_abs_grey:.2f} grey levels; n={drift.n}, {drift.steps} steps, {device}",
    )


if __name__ == "__main__":
    main()
