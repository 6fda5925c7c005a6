"""The conditional denoising UNet: one grayscale image channel plus one box channel.

The network knows nothing about noise schedules or sampling (see ``diffusion.py``).
It is a diffusers ``UNet2DModel`` wrapped so that three conditions reach it:

* pathology class -> ``label_embedding`` and acquisition domain -> ``domain_embedding``,
  summed and handed to the UNet as an already-embedded class vector
  (``class_embed_type="identity"`` adds it to the timestep embedding);
* lesion box -> a binary mask stacked as a second input channel (all zeros = no box),
  so the network sees *where* the lesion is at full resolution.

Every condition has a reserved "null" value (last embedding index, zero mask) that
training substitutes at random (classifier-free guidance dropout) and that the
unconditional branch of guided sampling uses.

The wrapper is a diffusers ``ModelMixin``/``ConfigMixin`` so ``save_pretrained`` /
``from_pretrained`` store and rebuild the whole conditional model, embeddings included.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

PresetName = Literal["tiny", "base", "large"]


class ModelConfig(BaseModel):
    """Architecture of the conditional UNet (saved with every checkpoint and export)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(32, description="px, square; must be divisible by 2 ** (len(block_out_channels) - 1)")
    block_out_channels: tuple[int, ...] = Field((32, 64, 64), description="channels per resolution level")
    # Self-attention only at the lowest resolution: at 32 px and above it dominates CPU cost.
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = Field(1, description="resnets per level (diffusers default 2)")
    attention_head_dim: int = Field(8, description="channels per attention head")
    norm_num_groups: int = Field(16, description="GroupNorm groups; must divide every block_out_channels entry")
    dropout: float = Field(0.0, description="0 is good for pretraining; 0.1 helps few-shot fine-tuning")
    channels: int = Field(1, ge=1, description="1 (grey pixels) or the autoencoder's latent channels")


PRESETS: dict[str, ModelConfig] = {
    # minutes-long CPU demos and tests (32-64 px)
    "tiny": ModelConfig(),
    # 128 px, one GPU
    "base": ModelConfig(
        image_size=128,
        block_out_channels=(64, 128, 256, 256),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=32,
        norm_num_groups=32,
    ),
    # 256 px, multi-GPU
    "large": ModelConfig(
        image_size=256,
        block_out_channels=(128, 128, 256, 256, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=64,
        norm_num_groups=32,
    ),
}


def model_config_for(preset: str, image_size: int | None = None) -> ModelConfig:
    """Preset architecture, optionally at another image size (e.g. ``tiny`` at 64 px).

    Raises:
        ValueError: unknown preset, or a size the UNet's downsampling cannot divide.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    if image_size is not None:
        cfg = cfg.model_copy(update={"image_size": int(image_size)})
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    if cfg.image_size % factor:
        raise ValueError(f"image_size {cfg.image_size} must be divisible by {factor} for preset {preset!r}")
    return cfg


# ``UNet2DModel.from_pretrained`` on a ConditionalUNet folder would build a plain UNet2DModel, match none
# of the weights (ours sit under ``unet.`` beside two embeddings) and return it randomly initialised with
# only a warning. Saved as ``act_fn`` in every config.json, this value is read by UNet2DModel as its
# activation name, so that load raises instead (with this text in the message); ConditionalUNet stores it
# and ignores it (its inner UNet2DModel keeps silu). Folders saved before it load as they did.
UNET2D_GUARD = "not-a-unet2dmodel__load-with-busgen.model.unet.conditionalunet.from_pretrained"


class ConditionalUNet(ModelMixin, ConfigMixin):
    """UNet2DModel conditioned on class, domain (embeddings) and box (input channel).

    Index ``num_labels`` / ``num_domains`` is the null label / domain.
    """

    @register_to_config
    def __init__(
        self,
        num_labels: int,
        num_domains: int,
        image_size: int = 32,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block: int = 1,
        attention_head_dim: int = 8,
        norm_num_groups: int = 16,
        dropout: float = 0.0,
        channels: int = 1,
        act_fn: str = UNET2D_GUARD,  # not an activation: see UNET2D_GUARD
    ):
        super().__init__()
        emb_dim = block_out_channels[0] * 4  # UNet2DModel's timestep-embedding width
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=channels + 1,  # image (or latent) channels + box mask
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
            class_embed_type="identity",  # we pass the summed condition embedding ourselves
        )
        self.label_embedding = nn.Embedding(num_labels + 1, emb_dim)
        self.domain_embedding = nn.Embedding(num_domains + 1, emb_dim)

    @property
    def null_label(self) -> int:
        return self.config.num_labels

    @property
    def null_domain(self) -> int:
        return self.config.num_domains

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        labels: torch.Tensor,
        domains: torch.Tensor,
        box_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Predict noise (or v) for ``sample`` (B,C,H,W) given int64 labels/domains (B,) and box_mask (B,1,H,W)."""
        x = torch.cat([sample, box_mask.to(sample.dtype)], dim=1)  # (B, C + 1, H, W)
        cond = self.label_embedding(labels) + self.domain_embedding(domains)  # (B, emb_dim)
        return self.unet(x, timestep, class_labels=cond).sample


def build_model(cfg: ModelConfig, num_labels: int, num_domains: int) -> ConditionalUNet:
    """Instantiate the conditional UNet for ``num_labels`` classes and ``num_domains`` domains."""
    if num_labels < 1 or num_domains < 1:
        raise ValueError(f"need at least one label and one domain, got {num_labels} and {num_domains}")
    return ConditionalUNet(num_labels=num_labels, num_domains=num_domains, **cfg.model_dump())


def maybe_enable_xformers(model: ModelMixin) -> bool:
    """Use xformers attention when it can run (CUDA present); torch SDPA otherwise.

    xformers installs beside CPU torch but raises NotImplementedError on CPU, so the
    import alone is not enough evidence.
    """
    if not torch.cuda.is_available() or importlib.util.find_spec("xformers") is None:
        return False
    try:  # pragma: no cover, GPU-only path
        model.enable_xformers_memory_efficient_attention()
        return True
    except Exception:  # pragma: no cover, GPU-only path; fall back to SDPA on any xformers build mismatch
        return False


def rasterize_boxes(boxes: list, size: int) -> np.ndarray:
    """Binary box masks (N, 1, size, size) float32 from normalised [x0, y0, x1, y1] boxes or None.

    A pixel is inside when its cell overlaps the box (floor/ceil), which inverts
    ``imageio.mask_to_box`` exactly and never yields an empty mask for a tiny box.
    """
    out = np.zeros((len(boxes), 1, size, size), dtype=np.float32)
    for i, box in enumerate(boxes):
        if box is None or len(box) == 0:
            continue
        x0, y0, x1, y1 = np.clip(np.asarray(box, dtype=np.float64), 0.0, 1.0)
        c0, r0 = int(np.floor(x0 * size + 1e-6)), int(np.floor(y0 * size + 1e-6))
        c1, r1 = int(np.ceil(x1 * size - 1e-6)), int(np.ceil(y1 * size - 1e-6))
        c0, r0 = min(c0, size - 1), min(r0, size - 1)
        out[i, 0, r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)] = 1.0
    return out


def drop_conditions(
    labels: torch.Tensor,
    domains: torch.Tensor,
    box_mask: torch.Tensor,
    p: float,
    null_label: int,
    null_domain: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each condition by its null value independently with probability ``p``.

    Independent dropping teaches every partial-condition combination, so guidance can
    later drop all of them at once and each one alone still works.
    """
    n = labels.shape[0]
    # drawn where the generator lives (a per-rank CUDA generator on GPU: no host round trip)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    drop = torch.rand((3, n), generator=generator, device=gen_device) < p
    drop = drop.to(labels.device)
    labels = torch.where(drop[0], torch.full_like(labels, null_label), labels)
    domains = torch.where(drop[1], torch.full_like(domains, null_domain), domains)
    box_mask = box_mask * (~drop[2]).to(box_mask.dtype)[:, None, None, None]
    return labels, domains, box_mask
