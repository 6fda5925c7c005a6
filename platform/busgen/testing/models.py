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


def export_untrained_autoencoder(out_dir: str | Path, size: int = 32, factor: int = 4, seed: int = 0) -> Path:
    """A randomly initialised, narrow autoencoder part (plumbing only: it reconstructs nothing)."""
    from busgen.model import autoencoder

    torch.manual_seed(seed)
    cfg = autoencoder.AutoencoderConfig(image_size=size, factor=factor, latent_channels=4, width=8)
    record = {"data_fingerprint": "untrained", "train_steps": 0}
    return autoencoder.save_autoencoder(out_dir, autoencoder.build_autoencoder(cfg), cfg, record)


def export_untrained_latent(
    out_dir: str | Path,
    seed: int = 0,
    size: int = 32,
    factor: int = 4,
    class_names: Sequence[str] = CLASSES,
    domains: Sequence[str] = ("phantom",),
) -> Path:
    """A randomly initialised latent generator (``tiny`` UNet on the latent grid of an untrained autoencoder)."""
    from busgen.model import autoencoder, diffusion

    ae_dir = export_untrained_autoencoder(Path(out_dir).with_name(Path(out_dir).name + "_ae"), size, factor, seed)
    arch, _ = autoencoder.read_info(ae_dir)
    torch.manual_seed(seed)
    cfg = autoencoder.latent_model_config("tiny", arch)
    unet = models.build_model(cfg, num_labels=len(class_names), num_domains=len(domains))
    _, masks, labels = make_phantom_arrays(30, size, seed=seed)
    prior = boxprior.fit([mask_to_box(m) for m in masks], labels)
    return generator.export_model(
        out_dir,
        unet,
        None,
        cfg,
        class_names,
        domains,
        prior,
        data_fingerprint="untrained",
        steps=0,
        diffusion_cfg=diffusion.DiffusionConfig(clip_sample=False),
        autoencoder_dir=ae_dir,
        latent_scaling=1.0,
    )
