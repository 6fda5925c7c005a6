"""Ray Data batches -> model tensors: decode, augment, rasterise boxes (host side of a training step).

Kept apart from the step itself (``step.py``) so the GPU benchmarks can drive the step on
synthetic tensors without pulling in Parquet or Ray.
"""

from __future__ import annotations

import numpy as np
import torch

from busgen.data import schema
from busgen.data.imageio import decode_image, resize_square, to_model_range
from busgen.model import unet


def decode_batch(batch: dict, class_to_idx: dict, domain_to_idx: dict, size: int) -> tuple:
    """Numpy batch from Ray Data -> (images float32 (B,H,W) in [-1,1], labels, domains, boxes list)."""
    imgs = []
    for png in batch[schema.IMAGE]:
        img = decode_image(bytes(png))
        imgs.append(img if img.shape == (size, size) else resize_square(img, size, mode="stretch"))
    labels = np.array([class_to_idx[str(x)] for x in batch[schema.LABEL]], dtype=np.int64)
    domains = np.array([domain_to_idx[str(x)] for x in batch[schema.DOMAIN]], dtype=np.int64)
    boxes = [None if b is None or len(b) != 4 else [float(v) for v in b] for b in batch[schema.BOX]]
    return to_model_range(np.stack(imgs)), labels, domains, boxes


def augment(images: np.ndarray, boxes: list, rng: np.random.Generator, hflip_prob: float, jitter: float) -> tuple:
    """Random horizontal flip (box mirrored with it) and small contrast/brightness jitter."""
    images = images.copy()
    boxes = list(boxes)
    for i in range(len(images)):
        if rng.random() < hflip_prob:
            images[i] = images[i][:, ::-1]
            if boxes[i] is not None:
                x0, y0, x1, y1 = boxes[i]
                boxes[i] = [1.0 - x1, y0, 1.0 - x0, y1]
    if jitter > 0:
        contrast = 1.0 + rng.uniform(-jitter, jitter, (len(images), 1, 1))
        brightness = rng.uniform(-jitter, jitter, (len(images), 1, 1))
        images = np.clip(images * contrast + brightness, -1.0, 1.0)
    return images.astype(np.float32), boxes


def prepare_batch(raw: dict, cfg, vocab: tuple[dict, dict], size: int, np_rng) -> tuple:
    """Decode, augment and rasterise one Ray Data batch into (x, labels, domains, box_mask) CPU tensors."""
    images, labels, domains, boxes = decode_batch(raw, vocab[0], vocab[1], size)
    images, boxes = augment(images, boxes, np_rng, cfg.hflip_prob, cfg.jitter)
    return (
        torch.from_numpy(images[:, None]),
        torch.from_numpy(labels),
        torch.from_numpy(domains),
        torch.from_numpy(unet.rasterize_boxes(boxes, size)),
    )
