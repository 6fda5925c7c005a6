"""Model surgery for few-shot adaptation: new condition vocabularies and LoRA adapters.

Everything that changes a pretrained ``ConditionalUNet`` lives here, so that training
(``busgen.train.adapt``) and loading (``busgen.model.generator``) rebuild exactly the
same module tree from the same typed ``AdapterSpec``:

* ``expand_conditions``: a model for a new label/domain set, keeping the pretrained
  embedding of every known name and initialising new ones from the mean of the
  pretrained ones (a neutral "some lesion / some device" starting point);
* ``apply_lora``: peft LoRA on attention (and optionally conv) projections; only the
  LoRA matrices and the condition embeddings train, so the adapter file is small;
* ``save_adapter`` / ``load_adapter_weights``: the adapter folder in peft's own format
  (``adapter_config.json`` + ``adapter_model.safetensors``, readable by ``LoraConfig.from_pretrained``
  and ``set_peft_model_state_dict`` on the UNet), so users can take our LoRA to peft/diffusers
  tooling; the condition embeddings, which are not LoRA weights, sit beside it in ``conditions.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from busgen.model.unet import ConditionalUNet

ADAPTER_FILE = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME: LoRA weights of the UNet
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME: the LoraConfig
CONDITIONS_FILE = "conditions.safetensors"  # ours: label/domain embeddings of the adapted vocabulary
CONDITION_PREFIXES = ("label_embedding", "domain_embedding")
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
AdaptMethod = Literal["lora", "full"]


class AdapterSpec(BaseModel):
    """How an adapted model is built from its base: recorded in the adapter's ``busgen.json``."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="pretrained model directory the adapter was trained on")
    method: AdaptMethod = "lora"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: list[str] = list(DEFAULT_LORA_TARGETS)
    class_names: list[str] = Field(description="label vocabulary of the adapted task")
    domain_names: list[str] = Field(description="device/site vocabulary of the adapted task")


def _resize_embedding(
    old: torch.nn.Embedding, old_names: Sequence[str], new_names: Sequence[str]
) -> torch.nn.Embedding:
    """Embedding for ``new_names`` + null: known names keep their rows, new ones start at the mean of the old."""
    w = old.weight.detach()
    mean = w[: len(old_names)].mean(dim=0)
    rows = [w[old_names.index(n)] if n in old_names else mean for n in new_names] + [w[len(old_names)]]  # last = null
    new = torch.nn.Embedding(len(new_names) + 1, w.shape[1])
    new.weight.data.copy_(torch.stack(rows))
    return new


def expand_conditions(
    model: ConditionalUNet,
    old_classes: Sequence[str],
    old_domains: Sequence[str],
    new_classes: Sequence[str],
    new_domains: Sequence[str],
) -> ConditionalUNet:
    """Replace the label/domain embeddings for a new vocabulary (in place); returns the model."""
    model.label_embedding = _resize_embedding(model.label_embedding, list(old_classes), list(new_classes))
    model.domain_embedding = _resize_embedding(model.domain_embedding, list(old_domains), list(new_domains))
    model.register_to_config(num_labels=len(new_classes), num_domains=len(new_domains))
    return model


def apply_lora(model: ConditionalUNet, rank: int, alpha: float, targets: Sequence[str]) -> ConditionalUNet:
    """Inject LoRA into ``targets`` of the UNet; freeze everything but LoRA and the condition embeddings."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    inject_adapter_in_model(lora, model.unet)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name or name.startswith(CONDITION_PREFIXES)
    return model


def build_adapted(
    base: ConditionalUNet, base_classes: Sequence[str], base_domains: Sequence[str], spec: AdapterSpec
) -> ConditionalUNet:
    """The adapted module tree: ``base`` (modified in place) with the new vocabulary and, for LoRA, adapters."""
    model = expand_conditions(base.train(), base_classes, base_domains, spec.class_names, spec.domain_names)
    if spec.method == "lora":
        apply_lora(model, spec.lora_rank, spec.lora_alpha, spec.lora_targets)
    return model


def condition_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapted vocabulary's label/domain embeddings: trained, but not LoRA weights (so not in peft's file)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n.startswith(CONDITION_PREFIXES)}


def save_adapter(model: ConditionalUNet, out: str | Path, base: str) -> None:
    """Write the LoRA of ``model.unet`` in peft's format, and the condition embeddings in ours.

    Keys in ``adapter_model.safetensors`` are peft's (adapter name stripped, relative to the UNet), so
    ``set_peft_model_state_dict(unet, load_file(...))`` restores them on a UNet injected with the saved config.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out)
    config = model.unet.peft_config["default"]
    config.base_model_name_or_path = base
    config.save_pretrained(str(out))
    weights = {
        k: v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(model.unet, save_embedding_layers=False).items()
    }
    save_file(weights, str(out / ADAPTER_FILE), metadata={"format": "pt"})
    save_file(condition_state(model), str(out / CONDITIONS_FILE))


def read_lora_config(adapter_dir: str | Path) -> dict:
    """Rank, alpha and targets from the folder's ``adapter_config.json``, read by peft itself."""
    from peft import LoraConfig

    cfg = LoraConfig.from_pretrained(str(adapter_dir))
    return {"lora_rank": cfg.r, "lora_alpha": float(cfg.lora_alpha), "lora_targets": sorted(cfg.target_modules)}


def missing_files(adapter_dir: str | Path) -> list[str]:
    """Adapter files absent from ``adapter_dir`` (a folder from an older version lacks peft's files)."""
    return [f for f in (ADAPTER_CONFIG, ADAPTER_FILE, CONDITIONS_FILE) if not (Path(adapter_dir) / f).is_file()]


def load_adapter_weights(model: ConditionalUNet, adapter_dir: str | Path) -> list[str]:
    """Load peft's LoRA weights and our condition embeddings into ``model``; returns the names still missing."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    result = set_peft_model_state_dict(model.unet, load_file(str(adapter_dir / ADAPTER_FILE)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    conditions = load_file(str(adapter_dir / CONDITIONS_FILE))
    missing += sorted(set(condition_state(model)) - set(conditions))
    model.load_state_dict(conditions, strict=False)
    return missing
