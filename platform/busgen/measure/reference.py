"""The frozen reference encoder: the one feature space of every FID, KID and PRDC the platform reports.

Distribution metrics are only comparable when they are taken in the same feature
space. Before this module, suites measured FID on each run's own real-only classifier
and studies on a copy encoder retrained per run, so no two FIDs could be compared.
The reference encoder is trained once, by a deterministic command
(`busgen.measure.reference_fit`, ``busgen reference-encoder``) on the public train
splits of BUSI and BUS-UCLM only, and ships inside the package as safetensors with a
JSON card. It is named by ``version`` and pinned by the sha256 of its weights file;
every report prints ``label`` beside its numbers, and `load_reference` refuses a
weights file whose hash does not match its card (a silently swapped encoder would
make old and new numbers look comparable when they are not).

Images of any size are resized to the encoder's ``image_size`` (64 px), so generators
of 32, 64 or 128 px are measured in the same space.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busgen.model.classifier import ClassifierConfig, ResNetClassifier, build_model, embed

REFERENCE_VERSION = "busref-v1"
ASSET_DIR = Path(__file__).parent / "assets"


def weights_path(version: str = REFERENCE_VERSION, folder: Path = ASSET_DIR) -> Path:
    return Path(folder) / f"{version}.safetensors"


def card_path(version: str = REFERENCE_VERSION, folder: Path = ASSET_DIR) -> Path:
    return Path(folder) / f"{version}.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class ReferenceEncoder:
    """A loaded reference encoder: its identity and its feature map."""

    version: str
    sha256: str
    model: ResNetClassifier
    image_size: int
    card: dict

    @property
    def label(self) -> str:
        """What a report prints beside every fidelity number."""
        return f"{self.version} (sha256 {self.sha256[:12]})"

    def identity(self) -> dict:
        """The JSON record of which encoder measured a result."""
        return {"name": self.version, "sha256": self.sha256, "image_size": self.image_size, "label": self.label}

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate features, float32 (N, D), of uint8 images (N, H, W) of any size."""
        if len(images) == 0:
            return np.zeros((0, self.model.feature_dim), np.float32)
        return embed(self.model, images)


@functools.lru_cache(maxsize=4)
def load_reference(version: str = REFERENCE_VERSION, folder: str | None = None) -> ReferenceEncoder:
    """The shipped encoder (or one in ``folder``), checked against the sha256 its card records."""
    from safetensors.torch import load_file

    where = Path(folder) if folder else ASSET_DIR
    weights, card_file = weights_path(version, where), card_path(version, where)
    if not weights.is_file() or not card_file.is_file():
        raise FileNotFoundError(
            f"error: reference encoder {version} not found in {where}; it ships with the package "
            "(reinstall busgen, or rebuild it with `busgen reference-encoder`, see docs/evaluation.md)"
        )
    card = json.loads(card_file.read_text())
    digest = file_sha256(weights)
    if digest != card["sha256"]:
        raise ValueError(
            f"error: {weights} has sha256 {digest[:12]}, its card says {card['sha256'][:12]}: the reference "
            "encoder was changed, so its numbers would not be comparable; restore the shipped file"
        )
    cfg = ClassifierConfig(**card["config"])
    model = build_model(cfg, len(card["class_names"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state)  # stored in float16 (a small file), computed in float32
    return ReferenceEncoder(version, digest, model.eval(), cfg.image_size, card)
