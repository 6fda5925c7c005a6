"""The evaluation wing's one way to read datasets into memory: images with labels, several splits, synthetic ids.

Evaluation sets are small (thousands of images), so they are decoded in-process with
`busgen.data.dataset.read_arrays` rather than streamed through Ray Data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from busgen.data import schema
from busgen.data.dataset import read_arrays, read_table
from busgen.measure.metrics import label_indices


def read_splits(path: str | Path, splits: Sequence[str] | None, classes: Sequence[str] | None):
    """Images, labels, boxes and domains of several splits (None = every row), concatenated.

    Returns:
        (images uint8 (N, H, W), labels list[str], boxes list, domains list[str])
    """
    return concat_splits([read_arrays(path, split=s, classes=classes) for s in (splits or [None])])


def concat_splits(parts: Sequence[tuple]) -> tuple:
    """Join several ``read_arrays`` results into one (images, labels, boxes, domains); empty parts are skipped."""
    filled = [p[0] for p in parts if len(p[0])]
    images = np.concatenate(filled) if filled else np.zeros((0, 1, 1), np.uint8)
    return images, *([v for p in parts for v in p[k]] for k in (1, 2, 3))


def labelled(path: str | Path, split: str | None, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(images, label indices into ``classes``) of one split; an empty selection is an error."""
    images, labels, _, _ = read_arrays(path, split=split, classes=classes)
    return require_labelled(images, labels, classes, path, split)


def require_labelled(images: np.ndarray, labels: Sequence, classes: Sequence[str], path, split) -> tuple:
    """(images, label indices into ``classes``); raises naming the dataset and split when nothing was selected."""
    if len(images) == 0:
        raise ValueError(
            f"error: no images of classes {list(classes)} in {path} (split {split}); "
            "check the dataset's labels and splits or the suite's `classes`"
        )
    return images, label_indices(labels, classes)


def synthetic_with_ids(path: str | Path, classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images of a synthetic set and their row ids (its ``index`` column, else the read position)."""
    images = read_splits(path, None, classes)[0]
    return images, row_ids(path, len(images), classes)


def row_ids(path: str | Path, n: int, classes: Sequence[str] | None = None) -> np.ndarray:
    """The ``index`` column of a set's rows (same files, order and class filter as its images), else 0..n-1."""
    table = read_table(path, [schema.INDEX], classes=classes)
    return np.asarray(table.column(schema.INDEX).to_pylist() if schema.INDEX in table.column_names else range(n))
