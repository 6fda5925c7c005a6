"""Augmentation-invariant "copy detection" encoder, trained self-supervised on real images.

Pixel distances miss copies that are shifted, flipped or re-noised, and
ImageNet encoders are neither available offline nor in-domain for ultrasound.
So, as in copy-detection work (SSCD, Pizzi et al. 2022), we train a small CNN
with a SimCLR objective (NT-Xent, Chen et al. 2020): two random augmentations of
one image must map close together and away from every other image in the
batch. The result embeds "the same image, slightly edited" close together and
different images apart -- exactly the similarity a memorisation audit needs. Its
features also serve as an in-domain space for FID/PRDC when no classifier exists.

For privacy measurements it must be trained on images *disjoint* from the ones it
audits: trained on the members, its space sets them apart from everything else, which
confounds the DCR attack even with no memorisation. Every encoder records what trained
it (``trained_on``, and hashes of the images); `require_disjoint` refuses an overlap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from busgen.measure.classify import augment_batch
from busgen.model.classifier import to_tensor


@dataclass
class CopyEncoderConfig:
    """Encoder size, SimCLR training and augmentation strength (the edits it learns to ignore)."""

    width: int = 16  # channels of the first conv; doubles per stage (4 stride-2 stages)
    dim: int = 64  # embedding size
    image_size: int = 64  # inputs resized to this
    epochs: int = 30  # passes over the training images
    batch_size: int = 64  # negatives per step = 2 * batch_size - 2
    lr: float = 2e-3  # AdamW
    temperature: float = 0.1  # NT-Xent softmax temperature
    max_shift: float = 0.08  # translation, fraction of the side
    scale: float = 0.1  # zoom in/out amplitude
    intensity: float = 0.15  # gain/offset jitter in [-1, 1] units
    noise: float = 0.05  # additive Gaussian noise std in [-1, 1] units
    seed: int = 0


class CopyEncoder(nn.Module):
    """Four stride-2 conv stages, global average pool, 2-layer projection to an L2-normalised embedding."""

    def __init__(self, width: int = 16, dim: int = 64, image_size: int = 64):
        super().__init__()
        self.image_size = image_size
        layers, c_in = [], 1
        for i in range(4):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c_in, c_in), nn.ReLU(), nn.Linear(c_in, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x).mean(dim=(2, 3))), dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR loss: view i's positive is its twin, negatives are all other 2B - 2 views."""
    z = torch.cat([z1, z2])  # (2B, D), already unit norm
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own candidate
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(sim, target)


def _augment(x: torch.Tensor, gen: torch.Generator, cfg: CopyEncoderConfig) -> torch.Tensor:
    return augment_batch(x, gen, cfg.max_shift, cfg.intensity, hflip=True, scale=cfg.scale, noise=cfg.noise)


def train_copy_encoder(
    images: np.ndarray,
    epochs: int | None = None,
    seed: int = 0,
    cfg: CopyEncoderConfig | None = None,
    data: str | None = None,
) -> CopyEncoder:
    """Train the copy encoder on real images (for privacy: disjoint from the members it will audit).

    Args:
        images: uint8 (N, H, W); N >= 2.
        epochs: overrides cfg.epochs.
        seed: overrides cfg.seed (same inputs and seed give the same encoder).
        cfg: encoder settings.
        data: what the images are (e.g. "val+test splits of datasets/busi"), kept as ``trained_on``.

    Returns:
        CopyEncoder in eval mode, with ``trained_on`` (a description) and ``data_hashes``
        (of its training images, for `require_disjoint`); use `encode` for features.
    """
    if len(images) < 2:
        raise ValueError(f"the copy encoder needs at least 2 training images, got {len(images)}")
    cfg = CopyEncoderConfig(
        **{**asdict(cfg or CopyEncoderConfig()), "seed": seed, **({"epochs": epochs} if epochs is not None else {})}
    )
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = to_tensor(images, cfg.image_size)
    model = CopyEncoder(cfg.width, cfg.dim, cfg.image_size)
    model.config = cfg
    model.trained_on = f"{data or 'unnamed images'} ({len(images)} images)"
    model.data_hashes = image_hashes(images)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    model.train()
    bs = min(cfg.batch_size, len(x))
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - bs + 1, bs):  # full batches only: BatchNorm and NT-Xent need several
            xb = x[perm[i : i + bs]]
            loss = nt_xent(model(_augment(xb, gen, cfg)), model(_augment(xb, gen, cfg)), cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.inference_mode()
def encode(encoder: CopyEncoder, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """L2-normalised float32 embeddings (N, dim): inner product = cosine similarity."""
    encoder.eval()
    x = to_tensor(images, encoder.image_size)
    if len(x) == 0:
        return np.zeros((0, encoder.head[-1].out_features), dtype=np.float32)
    return torch.cat([encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy().astype(np.float32)


def _hash(image: np.ndarray) -> str:
    return hashlib.sha1(f"{image.shape}".encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def image_hashes(images: Iterable[np.ndarray]) -> frozenset[str]:
    """SHA-1 of each image's shape and bytes: byte-identical images share a hash."""
    return frozenset(_hash(im) for im in images)


def disjoint_images(candidates: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """``candidates`` without the images byte-identical to one of ``exclude`` (e.g. members in a held-out split)."""
    excluded = image_hashes(exclude)
    keep = [_hash(im) not in excluded for im in candidates]
    return candidates[np.asarray(keep, dtype=bool)] if len(candidates) else candidates


def require_disjoint(encoder: CopyEncoder, images: np.ndarray, role: str) -> str:
    """What trained ``encoder`` (its ``trained_on``), once none of ``images`` is among its training images.

    Raises:
        ValueError: the encoder was trained on some of ``images``, or does not record its training images.
    """
    hashes = getattr(encoder, "data_hashes", None)
    if hashes is None:
        raise ValueError("the copy encoder does not record its training images: train it with train_copy_encoder")
    shared = sum(_hash(im) in hashes for im in images)
    if shared:
        raise ValueError(
            f"the copy encoder was trained on {shared} of the {len(images)} {role}: its space then sets them apart "
            "from every other image, which confounds the audit and the DCR attack; train it on images disjoint "
            "from them (e.g. the held-out splits)"
        )
    return encoder.trained_on
