"""Model registry: model id -> directory and metadata, fixed at deploy time.

It is the only way a request reaches a model, so a client can never name a path.
Metadata comes from the JSON files next to the weights (no torch), which lets the
HTTP ingress validate requests without loading any model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, SamplerName
from busgen.model.card import CARD_FILE, DEFAULT_STEPS, read_front_matter
from busgen.serve.errors import RequestError

CLASSIFIER_WEIGHTS = ("model.safetensors", "model.pt")  # model.pt: folders saved before safetensors


class SamplerDefaults(BaseModel):
    """The sampler settings the model card recommends; the playground starts from them."""

    sampler: SamplerName = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE


class GeneratorInfo(BaseModel):
    """What a client may know about a served generator (never its directory)."""

    id: str
    model_id: str = Field(description="weights fingerprint: changes whenever the weights do")
    class_names: list[str]
    domain_names: list[str]
    image_size: int
    defaults: SamplerDefaults = Field(default_factory=SamplerDefaults, description="the model card's sampler_defaults")
    default_steps: int | None = Field(None, description="a distilled student's own step count (busgen distill)")


def read_card_defaults(model_dir: str | Path) -> SamplerDefaults:
    """``busgen.sampler_defaults`` of the folder's model card (README.md); the library's defaults without a card."""
    fp = Path(model_dir) / CARD_FILE
    found = (read_front_matter(fp).get("busgen") or {}).get("sampler_defaults") if fp.is_file() else None
    return SamplerDefaults(**(found or {}))


class ClassifierInfo(BaseModel):
    model_id: str = Field(description="sha256 of the weights file (classifier.json has no id of its own)")
    model_version: str = Field(description='"<format_version>-<model_id>", echoed in every classify response')
    class_names: list[str]
    image_size: int


def read_generator_info(model_id: str, model_dir: str) -> GeneratorInfo:
    """Read ``busgen.json`` (no torch) so the ingress can validate requests without loading weights."""
    meta_fp = Path(model_dir) / "busgen.json"
    if not meta_fp.is_file():
        raise ValueError(f"generator {model_id!r}: {model_dir} is not a BUSGen model directory (no busgen.json)")
    meta = json.loads(meta_fp.read_text())
    return GeneratorInfo(
        id=model_id,
        model_id=meta.get("model_id", "unknown"),
        class_names=meta["class_names"],
        domain_names=meta["domain_names"],
        image_size=meta["image_size"],
        defaults=read_card_defaults(model_dir),
        default_steps=meta.get("sampling", {}).get("steps"),
    )


def read_classifier_info(model_dir: str) -> ClassifierInfo:
    """Read ``classifier.json`` and fingerprint the weights (``model.safetensors``, or a legacy ``model.pt``)."""
    root = Path(model_dir)
    if not (root / "classifier.json").is_file():
        raise ValueError(f"{model_dir} is not a saved classifier (no classifier.json)")
    meta = json.loads((root / "classifier.json").read_text())
    # the names of busgen.model.classifier.weights_file, without importing torch into the ingress
    weights = next((root / n for n in CLASSIFIER_WEIGHTS if (root / n).is_file()), None)
    if weights is None:
        raise ValueError(f"{model_dir} holds no classifier weights ({' or '.join(CLASSIFIER_WEIGHTS)})")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return ClassifierInfo(
        model_id=digest,
        model_version=f"{meta.get('format_version', 1)}-{digest}",
        class_names=meta["class_names"],
        image_size=meta["config"]["image_size"],
    )


class ModelRegistry:
    """Model id -> directory and metadata, fixed at deploy time; the only way a request reaches a model."""

    def __init__(self, generators: dict[str, str], default_id: str):
        self.dirs = dict(generators)
        self.default_id = default_id
        self.infos = {k: read_generator_info(k, d) for k, d in self.dirs.items()}

    def resolve(self, model: str | None) -> GeneratorInfo:
        """Info of ``model`` (default model when None); 404 for ids not in the registry."""
        key = model or self.default_id
        if key not in self.infos:
            raise RequestError(404, f"unknown model {key!r}; available models: {sorted(self.infos)}")
        return self.infos[key]

    def dir_of(self, model: str) -> str:
        self.resolve(model)
        return self.dirs[model]
