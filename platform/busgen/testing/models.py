"""Random-weight model exports: plumbing tests, cluster smoke runs and throughput benchmarks.

Sampling cost does not depend on what the weights learned, so generation, serving and
fault-tolerance checks can run on an untrained export and skip minutes of training.
Never use these models for anything that judges image quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from busgen.data.imageio import mask_to_box
from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.model import boxprior, generator
from busgen.model import unet as models


def export_untrained(
    out_dir: str | Path,
    seed: int = 0,
    size: int = 32,
    preset: str = "tiny",
    class_names: Sequence[str] = CLASSES,
    domains: Sequence[str] = ("phantom",),
) -> Path:
    """Export a randomly initialised model with a box prior fitted on phantom lesion masks."""
    torch.manual_seed(seed)
    cfg = models.model_config_for(preset, size)
    unet = models.build_model(cfg, num_labels=len(class_names), num_domains=len(domains))
    _, masks, labels = make_phantom_arrays(30, size, seed=seed)
    prior = boxprior.fit([mask_to_box(m) for m in masks], labels)
    return generator.export_model(
        out_dir, unet, None, cfg, class_names, domains, prior, data_fingerprint="untrained", steps=0
    )
