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

from busgen.serve.errors import RequestError


class GeneratorInfo(BaseModel):
    """What a client may know about a served generator (never its directory)."""

    id: str
    model_id: str = Field(description="weights fingerprint: changes whenever the weights do")
    class_names: list[str]
    domain_names: list[str]
    image_size: int
    default_steps: int | None = Field(None, description="a distilled student's own step count (busgen distill)")


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
        default_steps=meta.get("sampling", {}).get("steps"),
    )


def read_classifier_info(model_dir: str) -> ClassifierInfo:
    """Read ``classifier.json`` and fingerprint ``model.pt``."""
    root = Path(model_dir)
    if not (root / "classifier.json").is_file():
        raise ValueError(f"{model_dir} is not a saved classifier (no classifier.json)")
    meta = json.loads((root / "classifier.json").read_text())
    digest = hashlib.sha256((root / "model.pt").read_bytes()).hexdigest()[:16]
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
