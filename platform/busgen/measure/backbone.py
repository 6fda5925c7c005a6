"""A label-free pretrained backbone for the lower-variance yardstick variant.

A width-16 classifier trained from scratch on ~450 BUSI images moves by several AUC
points from seed to seed, so resolving a 0.02 difference takes tens of seeds. Starting
every arm from the same self-supervised backbone removes the random initialisation
from that spread. The backbone is the yardstick's own ResNet (stem and stages)
trained with SimCLR (NT-Xent on two augmentations per image; no labels) on images
named in its card. For the synthetic-only arm to stay synthetic-only, those images
must never be real: the recipes variant pretrains on the synthetic set itself.
`busgen.model.classifier.build_model` loads it when ``ClassifierConfig.init_backbone``
names the file; only the head starts random.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from busgen.measure.classify import augment_batch
from busgen.measure.privacy.encoder import nt_xent
from busgen.model.classifier import BACKBONE_PREFIXES, ClassifierConfig, build_model, to_tensor


class BackboneConfig(BaseModel):
    """Pretrain the yardstick's backbone label-free (SimCLR) on a synthetic set: the lower-variance variant."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description="images to pretrain on (every row); never real images for synthetic-only arms")
    out: str = Field(description="folder for backbone.safetensors and backbone.json")
    width: int = Field(16, description="must equal the yardstick classifier's width")
    image_size: int = Field(64, description="must equal the yardstick classifier's image_size")
    epochs: int = Field(15, ge=1, description="passes over the images")
    batch_size: int = Field(128, ge=4, description="negatives per step = 2 x batch_size - 2")
    lr: float = Field(2e-3, description="AdamW")
    temperature: float = Field(0.2, description="NT-Xent temperature")
    seed: int = Field(0, description="initialisation, order and augmentation")


def pretrain_backbone(images: np.ndarray, cfg: BackboneConfig, source: str) -> Path:
    """SimCLR on ``images`` (uint8 (N, H, W)); writes the stem+stages weights and a card; returns the weights path."""
    from safetensors.torch import save_file

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = build_model(ClassifierConfig(width=cfg.width, image_size=cfg.image_size), 2)
    proj = nn.Sequential(nn.Linear(net.feature_dim, net.feature_dim), nn.ReLU(), nn.Linear(net.feature_dim, 64))
    params = list(net.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    x = to_tensor(images, cfg.image_size)
    losses = []
    for _ in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x) - 1, cfg.batch_size):
            xb = x[order[i : i + cfg.batch_size]]
            if len(xb) < 2:
                continue
            views = [augment_batch(xb, gen, 0.08, 0.15, hflip=True, scale=0.1, noise=0.05) for _ in range(2)]
            z1, z2 = (nn.functional.normalize(proj(net.features(v)), dim=1) for v in views)
            loss = nt_xent(z1, z2, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        losses.append(total / len(x))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "backbone.safetensors"
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items() if k.startswith(BACKBONE_PREFIXES)}
    save_file(state, str(weights))
    card = {
        "what": "SimCLR-pretrained stem+stages of the yardstick ResNet (no labels)",
        "pretrained_on": source,
        "n_images": len(images),
        "config": cfg.model_dump(),
        "loss_per_epoch": losses,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    (out / "backbone.json").write_text(json.dumps(card, indent=2) + "\n")
    return weights
