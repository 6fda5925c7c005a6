"""Sampling img/s at 128 px: pixel tiny vs latent tiny (factor 4 and 8), side by side in one process.

Cost does not depend on what the weights learned, so the models are untrained (busgen.testing.models);
the autoencoders have the measured configuration's width (32). One batch of 16, DDIM 10 steps, guidance 1.8,
after one warm-up call; fp32, ``--threads`` torch threads:

    PYTHONPATH=platform python docs/results/latent_cpu/measure_sampling.py --out runs/latent_cpu/sampling.json
"""

import argparse
import json
import time
from pathlib import Path

import torch

from busgen.model import autoencoder, boxprior, diffusion, generator
from busgen.model import unet as models
from busgen.testing.models import CLASSES, export_untrained


def latent_model(root: Path, size: int, factor: int) -> Path:
    cfg = autoencoder.AutoencoderConfig(image_size=size, factor=factor, latent_channels=4, width=32)
    ae_dir = autoencoder.save_autoencoder(root / f"ae{factor}", autoencoder.build_autoencoder(cfg), cfg, {})
    ucfg = autoencoder.latent_model_config("tiny", cfg)
    unet = models.build_model(ucfg, len(CLASSES), 1)
    prior = boxprior.fit([[0.3, 0.3, 0.6, 0.6]] * 3, list(CLASSES))
    return generator.export_model(
        root / f"latent{factor}", unet, None, ucfg, CLASSES, ["phantom"], prior, "untrained", 0,
        diffusion_cfg=diffusion.DiffusionConfig(clip_sample=False), autoencoder_dir=ae_dir,
    )  # fmt: skip


def img_per_s(model_dir: Path, n: int, steps: int) -> float:
    gen = generator.load(model_dir, device="cpu")
    gen.sample(["benign"] * 2, steps=2, seed=0)  # warm-up
    t = time.perf_counter()
    gen.sample(["benign"] * n, steps=steps, seed=1, batch_size=n)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--root", default="runs/latent_cpu/sampling_models")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    dirs = {
        "pixel tiny 128 px": export_untrained(root / "pixel", size=128),
        "latent tiny 128 px, factor 4 (4 x 32 x 32)": latent_model(root, 128, 4),
        "latent tiny 128 px, factor 8 (4 x 16 x 16)": latent_model(root, 128, 8),
    }
    result = {name: img_per_s(d, args.n, args.steps) for name, d in dirs.items()}
    result = {"n": args.n, "steps": args.steps, "threads": args.threads, "img_per_s": result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
