"""The ultrasound autoencoder of latent diffusion: diffusers ``AutoencoderKL`` on 1-channel grey images.

Pixel diffusion costs grow with the square of the side; a latent generator denoises a
``factor``-times smaller grid of ``latent_channels`` and decodes once at the end
(Rombach et al. 2022; Medfusion uses factor 8, MONAI's 2D LDM factor 4). The
architecture is diffusers' own; this module only chooses its size, defines the loss
(L1 + MS-SSIM + a small KL, as in Medfusion) and reads and writes the folder part::

    autoencoder/
      config.json, diffusion_pytorch_model.safetensors   diffusers save_pretrained
      autoencoder.json                                   factor, channels, size, data fingerprint, weights id
      README.md                                          card

A latent generator copies this folder into its own (``generator.export_model``), so the
generator folder stays self-contained; ``LatentCodec`` is what sampling uses to decode.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL
from pydantic import BaseModel, ConfigDict, Field

from busgen.model import unet

AUTOENCODER_JSON = "autoencoder.json"
CARD_FILE = "README.md"
GENERATOR_SUBDIR = "autoencoder"  # where a latent generator's folder holds its copy
NO_CPSAMPLE = (
    "error: CPSample is not available for latent generators (its classifier is trained on noisy pixels, not "
    "latents): sample this model with protect=none, or protect a pixel generator"
)
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, torchmetrics' default


class AutoencoderError(ValueError):
    """A folder that is not an autoencoder part, or one that does not fit the run (size, factor)."""


class AutoencoderConfig(BaseModel):
    """Architecture of the autoencoder (saved in ``autoencoder.json`` beside diffusers' ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(64, description="px, square; must be divisible by factor")
    factor: Literal[4, 8] = Field(4, description="spatial downsampling: 4 (MONAI's 2D LDM) or 8 (Medfusion)")
    latent_channels: int = Field(4, ge=1, description="channels of the latent grid")
    width: int = Field(32, ge=8, description="channels of the first level; deeper levels double it, at most 4x")
    layers_per_block: int = Field(1, ge=1, description="resnets per level")

    @property
    def latent_size(self) -> int:
        return self.image_size // self.factor

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        levels = int(math.log2(self.factor)) + 1  # diffusers downsamples between consecutive levels
        return tuple(self.width * min(2**i, 4) for i in range(levels))


def build_autoencoder(cfg: AutoencoderConfig) -> AutoencoderKL:
    """A freshly initialised ``AutoencoderKL`` for 1-channel images at ``cfg.image_size``.

    Raises:
        AutoencoderError: an image size the factor does not divide.
    """
    if cfg.image_size % cfg.factor:
        raise AutoencoderError(
            f"error: image_size {cfg.image_size} is not divisible by factor {cfg.factor}: pick a multiple of it"
        )
    levels = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(32, cfg.width),
        sample_size=cfg.image_size,
        scaling_factor=1.0,  # the generator records its own (1 / std of its training latents)
    )


def msssim_metric(image_size: int):
    """torchmetrics MS-SSIM that works at ``image_size`` (images in [-1, 1]).

    The default (5 scales, 11 px Gaussian) needs 176 px or more. Small images get fewer
    scales (the coarsest at least 8 px) and a 7 px kernel, with the first betas renormalised;
    ``normalize="relu"`` keeps negative contrast terms from turning the product into NaN.
    """
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    scales = max(2, min(5, int(math.log2(image_size)) - 2))
    kernel = 11 if image_size >= 176 else 7
    betas = MSSSIM_BETAS[:scales]
    betas = tuple(b / sum(betas) for b in betas)
    return MultiScaleStructuralSimilarityIndexMeasure(
        kernel_size=kernel, betas=betas, data_range=2.0, normalize="relu", reduction="elementwise_mean"
    )


class ReconstructionForward(torch.nn.Module):
    """Encode, sample the posterior, decode, in one ``forward``: the module DDP wraps (it hooks ``forward`` only)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.vae.encode(x).latent_dist
        return posterior, self.vae.decode(posterior.sample(generator=generator)).sample


def autoencoder_loss(
    net: torch.nn.Module,
    x: torch.Tensor,
    msssim,
    msssim_weight: float,
    kl_weight: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L1 + msssim_weight * (1 - MS-SSIM) + kl_weight * KL of one batch x (B, 1, H, W) in [-1, 1].

    ``net`` is a ``ReconstructionForward`` (or its DDP wrapper). The decoder sees a sample of the
    posterior (the KL keeps its variance useful); the KL is per image, summed over latent
    elements (diffusers' ``kl()``), averaged over the batch.

    Returns:
        the loss and its detached parts (``l1``, ``msssim``, ``kl``) for logging.
    """
    posterior, recon = net(x, generator)
    l1 = (recon - x).abs().mean()
    ms = msssim(recon.float().clamp(-1, 1), x.float())
    kl = posterior.kl().mean()
    loss = l1 + msssim_weight * (1 - ms) + kl_weight * kl
    return loss, {"l1": l1.detach(), "msssim": ms.detach(), "kl": kl.detach()}


class LatentCodec:
    """Pixels <-> scaled latents with a trained autoencoder: what a latent generator trains on and decodes.

    Latents are the posterior mean (deterministic, so a cache does not depend on a seed)
    times ``scaling_factor`` (1 / std of the training latents: unit variance, as the noise
    schedule assumes).
    """

    def __init__(self, vae: AutoencoderKL, cfg: AutoencoderConfig, scaling_factor: float = 1.0):
        self.vae = vae.eval()
        self.cfg = cfg
        self.scaling_factor = float(scaling_factor)

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [-1, 1] -> (B, C, H/f, W/f) scaled latents (float32, on the codec's device)."""
        p = next(self.vae.parameters())
        return self.vae.encode(x.to(p.device, p.dtype)).latent_dist.mode().float() * self.scaling_factor

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (B, 1, H, W) float32 CPU images in [-1, 1]; each image decodes on its own."""
        p = next(self.vae.parameters())
        return self.vae.decode(z.to(p.device, p.dtype) / self.scaling_factor).sample.float().clamp(-1, 1).cpu()

    def to(self, device) -> LatentCodec:
        self.vae.to(device)
        return self


def latent_model_config(preset: str, cfg: AutoencoderConfig) -> unet.ModelConfig:
    """The UNet of a latent generator: the preset at the latent size, in/out channels = latent channels.

    Raises:
        ValueError: a latent size the preset's downsampling cannot divide (the message names both).
    """
    try:
        model_cfg = unet.model_config_for(preset, cfg.latent_size)
    except ValueError as exc:
        raise AutoencoderError(
            f"error: {exc} (latent grid of {cfg.image_size} px at factor {cfg.factor}): "
            "use a larger image_size, factor 4, or a preset with fewer levels"
        ) from None
    return model_cfg.model_copy(update={"channels": cfg.latent_channels})


# ----------------------------------------------------------------------------- folder part


def attach(model_dir: Path, folder: str | Path, scaling_factor: float) -> dict:
    """Copy the part into a generator folder as ``autoencoder/``; returns the ``latent`` record of its busgen.json.

    The image size it records is the pixel size: what the generator's samples are.
    """
    cfg, meta = read_info(folder)
    target = Path(model_dir) / GENERATOR_SUBDIR
    if Path(folder).resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)
    return {
        "autoencoder": GENERATOR_SUBDIR,
        "autoencoder_id": meta["autoencoder_id"],
        "scaling_factor": float(scaling_factor),
        "factor": cfg.factor,
        "latent_channels": cfg.latent_channels,
        "latent_size": cfg.latent_size,
        "image_size": cfg.image_size,
    }


def save_autoencoder(out_dir: str | Path, vae: AutoencoderKL, cfg: AutoencoderConfig, record: dict) -> Path:
    """Write the folder part (module docstring): weights, ``autoencoder.json`` with ``record`` and its id, card."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vae.to("cpu").save_pretrained(out)
    meta = {
        "kind": "autoencoder",
        "architecture": cfg.model_dump(mode="json"),
        "latent_size": cfg.latent_size,
        **record,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta["autoencoder_id"] = weights_id(out)
    (out / AUTOENCODER_JSON).write_text(json.dumps(meta, indent=2, default=float))
    (out / CARD_FILE).write_text(render_card(meta))
    return out


def weights_id(folder: str | Path) -> str:
    """Short sha256 of the part's weights file: latent caches and generators name the autoencoder by it."""
    h = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def read_info(folder: str | Path) -> tuple[AutoencoderConfig, dict]:
    """Architecture and record of an autoencoder part.

    Raises:
        AutoencoderError: no ``autoencoder.json`` (not written by ``busgen autoencoder``) or a broken one.
    """
    fp = Path(folder) / AUTOENCODER_JSON
    if not fp.is_file():
        raise AutoencoderError(
            f"error: {folder} is not an autoencoder folder (no {AUTOENCODER_JSON}): pass a folder written by "
            "`busgen autoencoder`"
        )
    try:
        meta = json.loads(fp.read_text())
        return AutoencoderConfig(**meta["architecture"]), meta
    except (ValueError, KeyError, TypeError) as exc:
        raise AutoencoderError(f"error: {fp} is unreadable ({exc}): re-run `busgen autoencoder`") from None


def load_codec(folder: str | Path, scaling_factor: float = 1.0, device: str | torch.device = "cpu") -> LatentCodec:
    """The codec of an autoencoder part (weights via diffusers ``from_pretrained``)."""
    cfg, _ = read_info(folder)
    vae = AutoencoderKL.from_pretrained(str(folder)).to(device)
    return LatentCodec(vae, cfg, scaling_factor)


def render_card(meta: dict) -> str:
    """The part's README: what it is, what it was trained on and how well it reconstructs."""
    a = meta["architecture"]
    metrics = meta.get("metrics") or {}
    lines = [
        f"# BUSGen ultrasound autoencoder {meta.get('autoencoder_id', '')}".rstrip(),
        "",
        f"diffusers `AutoencoderKL`, 1-channel {a['image_size']} px grey images -> {a['latent_channels']} x "
        f"{meta['latent_size']} x {meta['latent_size']} latents (factor {a['factor']}). Trained for "
        f"{meta.get('train_steps')} steps with L1 + MS-SSIM + KL on data with fingerprint "
        f"`{meta.get('data_fingerprint') or 'n/a'}`.",
        "",
        "The latent generators of `busgen pretrain autoencoder=<this folder>` train on its latents and carry a",
        "copy of it. Load it with `diffusers.AutoencoderKL.from_pretrained(<this folder>)`.",
    ]
    if metrics:
        lines += ["", "Last training metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))]
    return "\n".join(lines) + "\n"
