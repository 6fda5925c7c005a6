"""Train the reference encoder once, deterministically, on public train splits only.

The encoder is a site x pathology classifier (BUSI benign/malignant/normal and
BUS-UCLM's, six classes): its features separate what fidelity must see, both what a
lesion looks like and which scanner made the image. Supervised on labels that every
public set carries, it needs no downloaded weights and no images outside the train
splits, so every val/test image stays held out from the space it is measured in (the
real-vs-real floor compares val with test).

Deterministic by construction: one thread, seeded data order and augmentation,
``torch.use_deterministic_algorithms``, a fixed number of epochs (no wall-clock
budget) and the best-validation weights. Rerunning the command on the same data and
torch build writes a byte-identical weights file; the sha256 in its card is the
encoder's identity (`busgen.measure.reference`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from busgen.measure.arrays import read_splits
from busgen.measure.reference import REFERENCE_VERSION, card_path, file_sha256, weights_path
from busgen.model.classifier import ClassifierConfig


class ReferenceFitConfig(BaseModel):
    """Train the frozen reference encoder (FID/KID/PRDC feature space) on public train splits, deterministically."""

    model_config = ConfigDict(extra="forbid")

    datasets: dict[str, str] = Field(
        {"busi": "runs/data/busi64", "busuclm": "runs/data/uclm64"},
        description="site name -> ingested dataset (train split trains, val split selects the epoch)",
    )
    version: str = Field(REFERENCE_VERSION, description="name of the encoder; files <version>.safetensors/.json")
    out: str = Field("platform/busgen/measure/assets", description="folder the weights and card are written to")
    epochs: int = Field(30, ge=1, description="fixed epoch count (no early stop: the run is the same every time)")
    width: int = Field(16, description="ResNet width: 16 gives 128-d features and a 1.4 MB float16 file")
    image_size: int = Field(64, description="px every image is resized to, in training and when measuring")
    seed: int = Field(0, description="initialisation, data order and augmentation")


def _site_labels(cfg: ReferenceFitConfig, split: str) -> tuple[np.ndarray, list[str]]:
    images, labels = [], []
    for site, path in cfg.datasets.items():
        x, y, _, _ = read_splits(path, [split], None)
        images.append(x)
        labels += [f"{site}:{c}" for c in y]
    return np.concatenate(images), labels


def data_fingerprint(images: np.ndarray, labels: list[str]) -> str:
    """sha256 of the training images and labels, in order: which data made this encoder."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update("\n".join(labels).encode())
    return h.hexdigest()[:16]


def fit_reference(cfg: ReferenceFitConfig) -> Path:
    """Train, save ``<version>.safetensors`` and its JSON card in ``cfg.out``; returns the weights path."""
    from safetensors.torch import save_file

    from busgen.measure import classify

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        x_tr, y_tr = _site_labels(cfg, "train")
        x_val, y_val = _site_labels(cfg, "val")
        classes = sorted(set(y_tr))
        ccfg = ClassifierConfig(
            width=cfg.width,
            image_size=cfg.image_size,
            epochs=cfg.epochs,
            patience=cfg.epochs + 1,
            monitor="auc",
            positive="",
            seed=cfg.seed,
            label_smoothing=0.1,
        )
        model, history = classify.train_classifier(x_tr, y_tr, x_val, y_val, ccfg, classes)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = weights_path(cfg.version, out)
    # float16 on disk halves the file (1.4 MB); the loader computes in float32
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    card = {
        "version": cfg.version,
        "sha256": file_sha256(weights),
        "config": ccfg.model_dump(mode="json"),
        "class_names": classes,
        "trained_on": {site: {"dataset": Path(p).name, "split": "train"} for site, p in cfg.datasets.items()},
        "n_train": len(y_tr),
        "data_fingerprint": data_fingerprint(x_tr, y_tr),
        "best_val_auc": max(h["val_auc"] for h in history),
        "epochs": len(history),
        "dtype": "float16",
        "torch": torch.__version__,
        "command": "busgen reference-encoder "
        + " ".join(f"{k}={v}" for k, v in cfg.model_dump().items() if k not in ("datasets", "out")),
    }
    card_path(cfg.version, out).write_text(json.dumps(card, indent=2, default=float) + "\n")
    return weights
