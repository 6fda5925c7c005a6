"""A briefly *trained* phantom model, in-process and without Ray: for quality guards that need learned weights.

``busgen.model.smoke`` exports random weights, enough for plumbing and throughput. Checks
that compare two samplers' images (bf16 vs fp32, compiled vs eager) need a model whose
output is not chaotic: a random-weight UNet moves ~20 grey levels under a 2^-9 weight
perturbation. A tiny model trained for ~120 steps with the project's own ``train_step``
at 16 px is smooth enough and takes seconds on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import torch

from busgen.data.imageio import mask_to_box, to_model_range
from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.model import boxprior, diffusion, generator, unet
from busgen.train import checkpoint, step
from busgen.train.pretrain import PretrainConfig


def phantom_training_batch(n: int, size: int, seed: int = 0) -> tuple[tuple[torch.Tensor, ...], list, list[str]]:
    """``n`` phantom images as one training batch (images, class ids, domain ids, box masks), boxes, labels."""
    images, masks, labels = make_phantom_arrays(n, size, seed=seed)
    boxes = [mask_to_box(m) for m in masks]
    batch = (
        torch.from_numpy(to_model_range(images)[:, None]),
        torch.tensor([CLASSES.index(lab) for lab in labels]),
        torch.zeros(n, dtype=torch.long),
        torch.from_numpy(unet.rasterize_boxes(boxes, size)),
    )
    return batch, boxes, labels


def train_phantom_model(
    out_dir: str | Path, size: int = 16, steps: int = 120, n_images: int = 64, seed: int = 0
) -> Path:
    """Train the tiny preset on ``n_images`` phantom images for ``steps`` steps (batch 16); export the EMA weights."""
    cfg = PretrainConfig(
        data_dir="unused", image_size=size, warmup_steps=1, max_steps=1000, lr=2e-3, ema_decay=0.95, batch_size=16
    )
    dev = torch.device("cpu")
    model, ema, opt, sched = step.build_components(cfg, len(CLASSES), 1, dev)
    gen, _ = checkpoint.make_rngs(seed, 0)
    noise = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    data, boxes, labels = phantom_training_batch(n_images, size, seed)
    pick = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n_images, (cfg.batch_size,), generator=pick)
        step.train_step(model, model, noise, opt, sched, ema, tuple(t[idx] for t in data), cfg, gen, dev)
    model.load_state_dict(ema.shadow)
    return generator.export_model(
        out_dir, model, None, unet.model_config_for("tiny", size), CLASSES, ["phantom"],
        boxprior.fit(boxes, labels), "phantom", steps,
    )  # fmt: skip
