"""Tiny untrained generator exports for tests that exercise plumbing, not image quality."""

from __future__ import annotations

from pathlib import Path

from busgen.testing.models import export_untrained

CLASSES = ("benign", "malignant", "normal")


def export_untrained_tiny(out_dir: str | Path, seed: int = 0, size: int = 32, domains=("phantom",)) -> Path:
    """Export a randomly initialised ``tiny`` model (see ``busgen.testing.models.export_untrained``)."""
    return export_untrained(out_dir, seed=seed, size=size, domains=domains)


def save_random_classifier(out_dir, size: int = 32) -> str:
    """A randomly initialised small classifier folder: serving tests check plumbing, not accuracy."""
    import torch

    from busgen.model import classifier

    torch.manual_seed(0)
    cfg = classifier.ClassifierConfig.small(image_size=size)
    classifier.save_classifier(out_dir, classifier.build_model(cfg, len(CLASSES)), cfg, CLASSES)
    return str(out_dir)
