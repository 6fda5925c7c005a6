"""What a generator saw while training: its base model's data and, for adapted models, the few-shot support set.

``busgen.json`` records it. A pretrained model: ``data_fingerprint`` of its train split.
An adapted model (``busgen adapt``; LoRA adapters and full fine-tunes alike) adds
``base_data_fingerprint`` (its base model's ``data_fingerprint``), ``support_fingerprint``
(``pretrain.read_train_metadata`` of its ``support/`` folder) and ``support_sha256`` (the
row ids: sha256 of every support image). The support rows themselves stay in the model
folder (``support/support.parquet``), so every check can add them without being told.

The share filter's real-data check, the suite's memorisation audit and ``busgen protect``
take their members from ``training_data``: the base training data the user passes (its
fingerprint checked) united with the support set. Folders from before this record
(adapters without ``base_data_fingerprint``) are read through their base model's
``busgen.json`` and their ``support.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUPPORT_DIR = "support"  # the support rows: a Parquet dataset beside the adapted weights
SUPPORT_JSON = "support.json"  # the human-readable record of the support set


class ProvenanceError(ValueError):
    """What a generator trained on cannot be established, or the data given is not it."""


@dataclass(frozen=True)
class TrainingData:
    """The data a generator saw: the base model's train split (by fingerprint) and, adapted, its support set."""

    model_dir: str
    base_fingerprint: str  # data_fingerprint of the (base model's) pretraining split; "" = unknown
    support_dir: str | None = None  # adapted models: <model>/support
    support_fingerprint: str | None = None
    support_sha256: list[str] = field(default_factory=list)

    @property
    def adapted(self) -> bool:
        return self.support_dir is not None

    def describe(self) -> dict:
        """The JSON record of what was checked (for audit.json / protect.json)."""
        return {
            "model": self.model_dir,
            "base_data_fingerprint": self.base_fingerprint or None,
            "support_fingerprint": self.support_fingerprint,
            "support_images": len(self.support_sha256),
        }


def adapted_record(base_meta: dict, support_dir: str | Path, support_sha256: list[str]) -> dict:
    """The provenance fields an adapted model's ``busgen.json`` gets (see module docstring)."""
    from busgen.train.pretrain import read_train_metadata

    return {
        "base_data_fingerprint": base_meta.get("base_data_fingerprint") or base_meta.get("data_fingerprint", ""),
        "support_fingerprint": read_train_metadata(support_dir)["fingerprint"],
        "support_sha256": sorted(support_sha256),
    }


def training_data(model_dir: str | Path) -> TrainingData:
    """What the generator in ``model_dir`` trained on (see module docstring).

    Raises:
        ProvenanceError: busgen.json is unreadable, an old adapter's base is gone, or the support
            folder no longer holds the recorded support images.
    """
    from busgen.model import hubcache
    from busgen.model.generator import ModelLoadError, read_meta, resolve_base

    root = hubcache.resolve(model_dir)  # a folder, or a Hub repo id in the local Hub cache (as generator.load)
    try:
        meta = read_meta(root)
        base_fp = meta.get("base_data_fingerprint")
        if base_fp is None and meta.get("kind") == "adapter":  # written before the record: ask the base
            base_fp = read_meta(resolve_base(root, meta)).get("data_fingerprint", "")
        elif base_fp is None:  # pretrained, or a full fine-tune from before the record (it kept its base's)
            base_fp = meta.get("data_fingerprint", "")
    except (ModelLoadError, ValueError) as exc:
        raise ProvenanceError(f"cannot establish what {root} was trained on: {exc}") from None
    if "base_model" not in meta:  # pretrained: its own data only
        return TrainingData(str(root), str(base_fp))
    return TrainingData(str(root), str(base_fp or ""), *_support(root, meta))


def _support(root: Path, meta: dict) -> tuple[str, str, list[str]]:
    """(support folder, fingerprint, sha256 list) of an adapted model, the folder checked against the record."""
    from busgen.data import dataset, schema
    from busgen.train.pretrain import read_train_metadata

    folder = root / SUPPORT_DIR
    recorded = meta.get("support_sha256")
    if recorded is None and (root / SUPPORT_JSON).is_file():
        recorded = [r["sha256"] for r in json.loads((root / SUPPORT_JSON).read_text())["images"]]
    remedy = "restore the adapted model folder from a copy, or re-run `busgen adapt`"
    if recorded is None or not folder.is_dir():
        raise ProvenanceError(f"{root} is an adapted model without its support set ({folder}): {remedy}")
    held = dataset.read_table(folder, [schema.SHA256]).column(schema.SHA256).to_pylist()
    if sorted(held) != sorted(recorded):
        raise ProvenanceError(f"{folder} no longer holds the support images {root} recorded: {remedy}")
    fp = meta.get("support_fingerprint") or read_train_metadata(folder)["fingerprint"]
    return str(folder), fp, sorted(recorded)


def check_base_data(td: TrainingData, data_dir: str | Path, split: str | None, override: str) -> str:
    """Refuse ``data_dir`` (its ``split``) unless it is the generator's (base) training data; returns the verdict.

    Args:
        override: the option that skips this check, named in the error.

    Raises:
        ProvenanceError: the fingerprints differ (or the generator's is unknown).
    """
    from busgen.train.pretrain import read_train_metadata

    got = read_train_metadata(data_dir)["fingerprint"] if split == "train" else ""
    if not td.base_fingerprint or got != td.base_fingerprint:
        whose = "its base model was pretrained on" if td.adapted else "it was pretrained on"
        added = " (its support set is added from the model folder)" if td.adapted else ""
        raise ProvenanceError(
            f"{data_dir} (split {split!r}, data fingerprint {got or 'n/a'}) is not the training data of the "
            f"generator {td.model_dir} (fingerprint {td.base_fingerprint or 'unknown'}): pass the dataset {whose} "
            f"with split train{added}, or {override} to use exactly the images you pass (recorded)"
        )
    return "matched" + (" (base data + support set)" if td.adapted else "")


def read_support(td: TrainingData) -> tuple:
    """(images, labels, boxes, domains) of the support set; empty for a pretrained model."""
    from busgen.data.dataset import read_arrays

    if not td.adapted:
        return np.zeros((0, 1, 1), np.uint8), [], [], []
    return read_arrays(td.support_dir)


def _pixel_hash(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def unite(members: tuple, extra: tuple) -> tuple[tuple, int]:
    """``members`` plus the rows of ``extra`` whose pixels are not already among them; returns (union, rows added).

    Both are (images, labels, boxes, domains). A support set drawn from the data it is
    united with (a K-shot real arm) adds nothing: duplicates would distort k-NN ratios.
    """
    images, *rest = members
    if not len(extra[0]):
        return members, 0
    if len(images) and extra[0].shape[1:] != images.shape[1:]:
        raise ProvenanceError(
            f"support images are {extra[0].shape[-1]} px but the training images are {images.shape[-1]} px: "
            "pass the base model's training data at its own size"
        )
    seen = {_pixel_hash(im) for im in images}
    keep = [i for i, im in enumerate(extra[0]) if _pixel_hash(im) not in seen]
    if not keep:
        return members, 0
    joined = np.concatenate([images, extra[0][keep]]) if len(images) else extra[0][keep]
    return (joined, *(list(a) + [b[i] for i in keep] for a, b in zip(rest, extra[1:]))), len(keep)
