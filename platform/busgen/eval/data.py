"""The suite's datasets, decoded once: every part of a suite reads its images here.

A suite's parts ask for the same sets again and again (fidelity: held-out real, real
train and the synthetic set; privacy: the members and the synthetic set with its ids;
membership: the held-out real; the sampler grid and the confidence filter: more of the
same). ``SuiteData`` decodes each (dataset, split) once, keeps it in memory (evaluation
sets are thousands of images) and filters classes from that copy, so no part re-reads
Parquet. The Tune trials run in other processes and read their own data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from busgen.data.dataset import read_arrays
from busgen.measure.arrays import concat_splits, require_labelled, row_ids

Arrays = tuple[np.ndarray, list, list, list]  # images uint8 (N, H, W), labels, boxes, domains


class SuiteData:
    """Decoded splits of the datasets one suite reads, keyed by (folder, split)."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str | None], Arrays] = {}
        self._ids: dict[str, np.ndarray] = {}

    def _split(self, path: str | Path, split: str | None) -> Arrays:
        key = (str(Path(path).resolve()), split)
        if key not in self._arrays:
            self._arrays[key] = read_arrays(path, split=split)
        return self._arrays[key]

    def splits(self, path: str | Path, splits: Sequence[str] | None, classes: Sequence[str] | None) -> Arrays:
        """Images, labels, boxes and domains of several splits (None = every row), concatenated, of ``classes``."""
        return concat_splits([_of_classes(self._split(path, s), classes) for s in (splits or [None])])

    def labelled(self, path: str | Path, split: str | None, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(images, label indices into ``classes``) of one split; an empty selection is an error."""
        images, labels, _, _ = self.splits(path, [split] if split else None, classes)
        return require_labelled(images, labels, classes, path, split)

    def synthetic_with_ids(self, path: str | Path, classes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        """Images of a synthetic set and their row ids (its ``index`` column, else the read position)."""
        images, labels, _, _ = self._split(path, None)
        key = str(Path(path).resolve())
        if key not in self._ids:
            self._ids[key] = row_ids(path, len(images))  # same files and order as the images
        keep = _class_mask(labels, classes)
        return images[keep], self._ids[key][keep]


def _class_mask(labels: list, classes: Sequence[str] | None) -> np.ndarray:
    if classes is None:
        return np.ones(len(labels), dtype=bool)
    wanted = set(classes)
    return np.asarray([lbl in wanted for lbl in labels], dtype=bool)


def _of_classes(arrays: Arrays, classes: Sequence[str] | None) -> Arrays:
    images, labels, boxes, domains = arrays
    if classes is None:
        return arrays
    keep = _class_mask(labels, classes)
    idx = np.flatnonzero(keep)
    return images[keep], [labels[i] for i in idx], [boxes[i] for i in idx], [domains[i] for i in idx]
