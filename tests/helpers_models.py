"""Tiny untrained generator exports for tests that exercise plumbing, not image quality."""

from __future__ import annotations

from pathlib import Path

from busgen.testing.models import export_untrained

CLASSES = ("benign", "malignant", "normal")


def export_untrained_tiny(out_dir: str | Path, seed: int = 0, size: int = 32, domains=("phantom",)) -> Path:
    """Export a randomly initialised ``tiny`` model (see ``busgen.testing.models.export_untrained``)."""
    return export_untrained(out_dir, seed=seed, size=size, domains=domains)
