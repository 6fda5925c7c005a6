"""Tiny untrained generator exports for tests that exercise plumbing, not image quality.

Random weights sample noise-like images, which is all that generation, serving and
resume tests need; they stay fast because no training run is involved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from busgen import boxprior, generator, models
from busgen.imageio import mask_to_box
from busgen.phantom import make_phantom_arrays

CLASSES = ("benign", "malignant", "normal")


def export_untrained_tiny(out_dir: str | Path, seed: int = 0, size: int = 32, domains=("phantom",)) -> Path:
    """Export a randomly initialised ``tiny`` model with a box prior fitted on phantom masks."""
    torch.manual_seed(seed)
    cfg = models.model_config_for("tiny", size)
    unet = models.build_model(cfg, num_labels=len(CLASSES), num_domains=len(domains))
    _, masks, labels = make_phantom_arrays(30, size, seed=seed)
    prior = boxprior.fit([mask_to_box(m) for m in masks], labels)
    return generator.export_model(out_dir, unet, None, cfg, CLASSES, domains, prior, data_fingerprint="untrained", steps=0)
