"""A briefly *trained* phantom model, in-process and without Ray: for quality guards that need learned weights.

``busgen.testing.models`` exports random weights, enough for plumbing and throughput. Checks
that compare two samplers' images (bf16 vs fp32, compiled vs eager) need a model whose
output is not chaotic: a random-weight UNet moves ~20 grey levels under a 2^-9 weight
perturbation. A tiny model trained for ~120 steps with the project's own ``train_step``
at 16 px is smooth enough and takes seconds on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from busgen.data.imageio import mask_to_box, to_model_range
from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.model import boxprior, diffusion, generator, unet
from busgen.train import checkpoint, step
from busgen.train.pretrain import PretrainConfig


def phantom_training_batch(
    n: int, size: int, seed: int = 0, style: str = "a", classes: Sequence[str] = CLASSES, domain_id: int = 0
) -> tuple[tuple[torch.Tensor, ...], list, list[str]]:
    """``n`` phantom images of one device style as one training batch (images, class ids, domain ids, box
    masks), their boxes and labels."""
    images, masks, labels = make_phantom_arrays(n, size, seed=seed, style=style, classes=tuple(classes))
    boxes = [mask_to_box(m) for m in masks]
    batch = (
        torch.from_numpy(to_model_range(images)[:, None]),
        torch.tensor([list(classes).index(lab) for lab in labels]),
        torch.full((n,), domain_id, dtype=torch.long),
        torch.from_numpy(unet.rasterize_boxes(boxes, size)),
    )
    return batch, boxes, labels


def train_phantom_model(
    out_dir: str | Path,
    size: int = 16,
    steps: int = 120,
    n_images: int = 64,
    seed: int = 0,
    domain_styles: Mapping[str, str] | None = None,
    classes: Sequence[str] = CLASSES,
    batch_size: int = 16,
    lr: float = 2e-3,
    warmup_steps: int = 1,
    ema_decay: float = 0.95,
) -> Path:
    """Train the tiny preset on ``n_images`` phantom images per domain for ``steps`` steps; export the EMA weights.

    ``domain_styles`` maps each domain name to its phantom device style (default one domain,
    "phantom", style "a"); domain j's images use seed ``seed + j``.
    """
    styles = dict(domain_styles or {"phantom": "a"})
    cfg = PretrainConfig(
        data_dir="unused", image_size=size, warmup_steps=warmup_steps, max_steps=1000, lr=lr,
        ema_decay=ema_decay, batch_size=batch_size,
    )  # fmt: skip
    dev = torch.device("cpu")
    model, ema, opt, sched = step.build_components(cfg, len(classes), len(styles), dev)
    gen, _ = checkpoint.make_rngs(seed, 0)
    noise = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    parts = [
        phantom_training_batch(n_images, size, seed + j, style, classes, j) for j, style in enumerate(styles.values())
    ]
    data = tuple(torch.cat(ts) for ts in zip(*(p[0] for p in parts)))
    boxes, labels = [b for p in parts for b in p[1]], [lbl for p in parts for lbl in p[2]]
    pick = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (cfg.batch_size,), generator=pick)
        step.train_step(model, model, noise, opt, sched, ema, tuple(t[idx] for t in data), cfg, gen, dev)
    model.load_state_dict(ema.shadow)
    return generator.export_model(
        out_dir, model, None, unet.model_config_for("tiny", size), list(classes), list(styles),
        boxprior.fit(boxes, labels), "phantom", steps,
    )  # fmt: skip


def distill_phantom(teacher_dir: str | Path, out_dir: str | Path, n_images: int = 64, seed: int = 0, **overrides):
    """``busgen distill``'s phases in-process on the phantom images the teacher trained on (no Ray); the folders.

    ``overrides`` are ``DistillConfig`` fields (iterations, step counts, batch size...).
    """
    from busgen.train import distill

    teacher = generator.load(teacher_dir, device="cpu")
    cfg = distill.DistillConfig(teacher=str(teacher_dir), data_dir="unused", out=str(out_dir), seed=seed, **overrides)
    batch, _, _ = phantom_training_batch(n_images, teacher.image_size, seed)
    pick = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            idx = torch.randint(0, n_images, (cfg.batch_size,), generator=pick)
            yield tuple(t[idx] for t in batch)

    state = distill.train_phases(distill.start_state(cfg, teacher.model), cfg, teacher.diffusion_cfg, batches())
    return distill.export_students(state.done, cfg, teacher)
