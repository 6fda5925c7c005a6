"""Train a servable diagnosis classifier on an ingested dataset: the yardstick recipe, safetensors and a card.

`busgen evaluate` trains classifiers inside its work folder to measure synthetic data;
this is the everyday command for a team that wants the classifier itself: the same
recipe (``ClassifierConfig.yardstick``: early stopping on *real* validation AUC under a
plateau LR rule, label smoothing, weight EMA, flip averaging), trained on the train
split, selected on val and scored once on test. The folder it writes is what
``busgen serve --classifier`` and ``Predictor.from_checkpoint`` load: ``model.safetensors``
(tensors only, no pickled code), ``classifier.json`` (config, classes, metrics) and a
short model card (``README.md``) saying what data made it and how to use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from busgen.data.dataset import dataset_info
from busgen.measure import classify
from busgen.measure.arrays import labelled
from busgen.model.classifier import ClassifierConfig, save_classifier, to_tensor

CARD_FILE = "README.md"


class TrainClassifierRun(BaseModel):
    """Train a servable diagnosis classifier on an ingested dataset (train split; early stopping on real val)."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description="ingested dataset (busgen ingest): train, val and (optionally) test splits")
    out: str = Field(description="classifier folder to write: model.safetensors, classifier.json, README.md")
    classes: list[str] | None = Field(None, description="classes to learn, in output order; default: the dataset's")
    positive: str = Field("malignant", description="class whose one-vs-rest validation AUC selects the epoch")
    image_size: int | None = Field(None, ge=8, description="px inputs are resized to; default: the dataset's size")
    width: int = Field(32, ge=4, description="ResNet width: 64 = ResNet-18, 32 default, 16 for quick CPU runs")
    epochs: int = Field(30, ge=1, description="upper bound; early stopping on validation AUC usually ends sooner")
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    batch_size: int = Field(64, ge=1, description="images per optimizer step")
    max_minutes: float | None = Field(None, gt=0, description="wall budget; stops after the epoch that passes it")
    seed: int = Field(0, description="initialisation, data order and augmentation: the same seed, the same model")


def classifier_config(cfg: TrainClassifierRun, image_size: int) -> ClassifierConfig:
    """The yardstick recipe with the run's sizes and budgets."""
    return ClassifierConfig.yardstick(
        width=cfg.width,
        image_size=image_size,
        epochs=cfg.epochs,
        patience=cfg.patience,
        batch_size=cfg.batch_size,
        positive=cfg.positive,
        seed=cfg.seed,
        max_seconds=cfg.max_minutes * 60 if cfg.max_minutes else None,
    )


def fit_classifier(cfg: TrainClassifierRun) -> dict:
    """Train, save the folder, write its card; returns the metrics and settings recorded in ``classifier.json``."""
    info = dataset_info(cfg.data_dir)
    classes = list(cfg.classes or info.get("classes") or [])
    if not classes:
        raise ValueError(f"error: {cfg.data_dir} names no classes (no dataset.json); pass --classes a,b,c")
    x_tr, y_tr = labelled(cfg.data_dir, "train", classes)
    x_val, y_val = labelled(cfg.data_dir, "val", classes)
    missing = [c for k, c in enumerate(classes) if not (y_tr == k).any()]
    if missing:
        raise ValueError(
            f"error: no train images of {missing} in {cfg.data_dir}; drop them from --classes "
            f"(the dataset has {', '.join(info.get('classes') or [])})"
        )
    ccfg = classifier_config(cfg, cfg.image_size or int(info.get("image_size") or x_tr.shape[-1]))
    model, history = classify.train_classifier(x_tr, y_tr, x_val, y_val, ccfg, classes)
    best = max(history, key=lambda h: h["val_auc"] if np.isfinite(h["val_auc"]) else -h["val_loss"])
    metrics = {
        "n_train": len(y_tr),
        "n_val": len(y_val),
        "epochs": len(history),
        "stopped": classify.STOP_REASONS[int(history[-1]["stop"])],
        "best_epoch": int(best["epoch"]),
        "val_auc": best["val_auc"],
        "val_acc": best["val_acc"],
    }
    metrics |= _test_metrics(model, cfg.data_dir, classes, cfg.positive)
    record = {
        "data": {"data_dir": cfg.data_dir, "source_name": info.get("source_name"), "classes": classes},
        "train_command": "busgen train-classifier " + " ".join(_words(cfg)),
    }
    out = save_classifier(cfg.out, model, ccfg, classes, metrics | record)
    write_card(out, ccfg, classes, metrics, record)
    return metrics


def _test_metrics(model, data_dir: str, classes: list[str], positive: str) -> dict:
    """Accuracy and AUC on the test split, measured once after selection; nothing when the set has no test rows."""
    try:
        x_te, y_te = labelled(data_dir, "test", classes)
    except ValueError:  # no test split: the card says so
        return {}
    scores = classify.evaluate(model, to_tensor(x_te, model.image_size), torch.from_numpy(y_te), classes, positive)
    return {"n_test": len(y_te), "test_auc": scores["val_auc"], "test_acc": scores["val_acc"]}


def _words(cfg: TrainClassifierRun) -> list[str]:
    """The CLI words that rebuild ``cfg`` (defaults left out)."""
    words = [f"--data-dir {cfg.data_dir}", f"--out {cfg.out}"]
    for name, value in cfg.model_dump(exclude_defaults=True, exclude={"data_dir", "out"}).items():
        value = ",".join(value) if isinstance(value, list) else value
        words.append(f"--{name.replace('_', '-')} {value}")
    return words


def render_card(ccfg: ClassifierConfig, classes: list[str], metrics: dict, record: dict) -> str:
    """The classifier's card: front matter (classes, data, metrics), then use, limits and the data's licence."""
    source = record["data"].get("source_name") or Path(record["data"]["data_dir"]).name
    front = {
        "license": "other",  # the weights inherit the training data's terms; see the Licence section
        "library_name": "busgen",
        "tags": ["busgen", "image-classification", "breast-ultrasound", "medical-imaging"],
        "datasets": [source],
        "busgen": {"kind": "classifier", "classes": classes, "image_size": ccfg.image_size, "metrics": metrics},
    }
    scores = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("val_auc", "test_auc", "test_acc") if k in metrics)
    return "\n".join(
        [
            "---",
            yaml.safe_dump(front, sort_keys=False).rstrip(),
            "---",
            "",
            "# BUSGen diagnosis classifier",
            "",
            f"A ResNet (width {ccfg.width}) classifying {ccfg.image_size} px breast-ultrasound images as "
            f"{', '.join(classes)}, trained on the train split of `{source}` ({metrics['n_train']} images) with the "
            f"yardstick recipe: early stopping on real validation AUC of `{ccfg.positive}` "
            f"({metrics['stopped']} after {metrics['epochs']} epochs), plateau LR, label smoothing "
            f"{ccfg.label_smoothing}, EMA {ccfg.ema_decay}, flip averaging. Scores: {scores or 'none'}"
            f"{'' if 'test_auc' in metrics else ' (the dataset has no test split)'}.",
            "",
            f"Trained with: `{record['train_command']}`",
            "",
            "## How to use",
            "",
            "```bash",
            "busgen serve --generator default=<generator folder> --classifier <this folder>",
            "```",
            "",
            "```python",
            "from busgen.model.classifier import Predictor",
            "predict = Predictor.from_checkpoint('<this folder>')",
            "out = predict({'image': images})  # uint8 (N, H, W) -> probs (N, C), pred_label (N,)",
            "```",
            "",
            "## Limits",
            "",
            "Research use only; not a medical device. It knows the scanners, sites and label noise of its "
            "training data and none other: validate it on your own data before relying on it.",
            "",
            "## Licence",
            "",
            f"The weights are derived from `{source}`: that dataset's licence and citation apply to them "
            "(for example, weights trained on a CC BY-NC source are for non-commercial use only).",
            "",
        ]
    )


def write_card(out: Path, ccfg: ClassifierConfig, classes: list[str], metrics: dict, record: dict) -> Path:
    path = Path(out) / CARD_FILE
    path.write_text(render_card(ccfg, classes, metrics, record))
    return path
