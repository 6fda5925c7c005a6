"""Autoencoder reconstruction on held-out BUSI (64 px): a fixed wall-time fit, then PSNR, MS-SSIM, and the
reference encoder's KID / FID / detector AUC of reconstructions against real images.

Pure torch in one process, one thread (the 2-core machine is shared); the numbers in README.md came from:

    PYTHONPATH=platform python docs/results/latent_cpu/measure_autoencoder.py \
        --data /work/main/runs/data/busi64 --minutes 12 --out runs/latent_cpu/ae.json

Real vs reconstructed use disjoint images (real = val split, reconstructed = test split), so the detector cannot
pair an image with its own reconstruction; the floor is real val vs real test.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from busgen.data.dataset import read_arrays
from busgen.data.imageio import from_model_range, to_model_range
from busgen.measure.fidelity import reference_fidelity
from busgen.model import autoencoder as ae


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--minutes", type=float, default=12)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, _, _, _ = read_arrays(args.data, split="train")
    val, _, _, _ = read_arrays(args.data, split="val")
    test, _, _, _ = read_arrays(args.data, split="test")
    size = train.shape[-1]
    cfg = ae.AutoencoderConfig(image_size=size, factor=args.factor, latent_channels=4, width=32)
    vae = ae.build_autoencoder(cfg)
    net, metric = ae.ReconstructionForward(vae), ae.msssim_metric(size)
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4)
    x_all = torch.from_numpy(to_model_range(train)[:, None])
    rng = np.random.default_rng(0)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.minutes * 60:
        idx = rng.choice(len(x_all), 16, replace=False)
        x = x_all[idx]
        flip = torch.from_numpy(rng.random(16) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss, parts = ae.autoencoder_loss(net.train(), x, metric, 0.5, 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 25 == 0:
            print(f"step {steps} {time.perf_counter() - t0:.0f}s l1 {float(parts['l1']):.4f} "
                  f"ms-ssim {float(parts['msssim']):.3f}", flush=True)  # fmt: skip
    train_s = time.perf_counter() - t0
    codec = ae.LatentCodec(vae.eval(), cfg)

    def reconstruct(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_model_range(images)[:, None])
        return np.concatenate([from_model_range(codec.decode(codec.encode(x[i : i + 32]))[:, 0].numpy())
                               for i in range(0, len(x), 32)])  # fmt: skip

    t1 = time.perf_counter()
    rec_test = reconstruct(test)
    decode_s = time.perf_counter() - t1
    err = (rec_test.astype(np.float64) - test.astype(np.float64)) / 255.0
    psnr = float(np.mean(10 * np.log10(1.0 / np.maximum((err**2).reshape(len(err), -1).mean(1), 1e-12))))
    ms = float(ae.msssim_metric(size)(torch.from_numpy(to_model_range(rec_test)[:, None]),
                                      torch.from_numpy(to_model_range(test)[:, None])))  # fmt: skip
    fid = reference_fidelity(val, rec_test, floor_images=test)
    result = {
        "data": args.data,
        "image_size": size,
        "factor": args.factor,
        "train_minutes": train_s / 60,
        "steps": steps,
        "images_seen": steps * 16,
        "reconstruct_img_per_s": len(test) / decode_s,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "psnr_db": psnr,
        "ms_ssim": ms,
        "fidelity": fid,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
