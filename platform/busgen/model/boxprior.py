"""Per-class lesion-box prior: where lesions sit and how big they are, per pathology.

When a user asks for "a malignant image" without a box, the generator draws a box
from this prior so synthetic lesions follow the training distribution of position
and size (malignant lesions are typically taller and deeper than benign ones).

A Gaussian kernel density estimate per class over (cx, cy, log w, log h): the log
scale makes small and large lesions equally smooth and keeps sampled sizes positive.
It is stored as JSON (training points + bandwidth) rather than pickle, so a model
directory is safe to load from an untrusted source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.neighbors import KernelDensity

MIN_SIDE = 0.02  # smallest sampled box side, fraction of the image
MIN_BANDWIDTH = 0.02  # keeps one- or two-box classes from collapsing to a point
FORMAT_VERSION = 1


def boxes_to_features(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x0,y0,x1,y1 -> (N, 4) cx, cy, log w, log h."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.clip(b[:, 2] - b[:, 0], MIN_SIDE, 1.0)
    h = np.clip(b[:, 3] - b[:, 1], MIN_SIDE, 1.0)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, np.log(w), np.log(h)], axis=1)


def features_to_boxes(f: np.ndarray) -> np.ndarray:
    """Inverse of ``boxes_to_features``, clipped so every box lies in [0, 1] with sides >= MIN_SIDE."""
    w = np.clip(np.exp(f[:, 2]), MIN_SIDE, 1.0)
    h = np.clip(np.exp(f[:, 3]), MIN_SIDE, 1.0)
    cx = np.clip(f[:, 0], w / 2, 1 - w / 2)
    cy = np.clip(f[:, 1], h / 2, 1 - h / 2)
    return np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), 0.0, 1.0)


def scott_bandwidth(points: np.ndarray) -> float:
    """Scott's rule scaled by the data's mean standard deviation (sklearn's 'scott' ignores scale)."""
    n, d = points.shape
    spread = float(points.std(axis=0).mean()) if n > 1 else 0.0
    return max(MIN_BANDWIDTH, spread * n ** (-1.0 / (d + 4)))


class BoxPrior:
    """KDE box prior per class; classes without boxes yield None (no lesion)."""

    def __init__(self, points: dict[str, np.ndarray] | None = None, bandwidths: dict[str, float] | None = None):
        self.points = {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in (points or {}).items()}
        self.bandwidths = dict(bandwidths or {})
        self._kdes: dict[str, KernelDensity] = {}

    @classmethod
    def fit(cls, boxes: Sequence, labels: Sequence[str]) -> BoxPrior:
        """Fit on training boxes (each [x0, y0, x1, y1] or None) and their class labels."""
        if len(boxes) != len(labels):
            raise ValueError(f"got {len(boxes)} boxes but {len(labels)} labels")
        per_class: dict[str, list] = {}
        for box, label in zip(boxes, labels):
            if box is not None and len(box) == 4:
                per_class.setdefault(str(label), []).append(list(box))
        points = {k: boxes_to_features(np.array(v)) for k, v in per_class.items()}
        return cls(points, {k: scott_bandwidth(p) for k, p in points.items()})

    def has_boxes(self, label: str) -> bool:
        return label in self.points and len(self.points[label]) > 0

    def _kde(self, label: str) -> KernelDensity:
        if label not in self._kdes:
            self._kdes[label] = KernelDensity(kernel="gaussian", bandwidth=self.bandwidths[label]).fit(
                self.points[label]
            )
        return self._kdes[label]

    def sample(self, label: str, n: int, seed: int) -> list[list[float] | None]:
        """n boxes [x0, y0, x1, y1] in [0, 1] for class ``label``, reproducible from ``seed``.

        Returns a list of n ``None`` for classes never seen with a box (e.g. ``normal``).
        """
        if not self.has_boxes(label):
            return [None] * n
        feats = self._kde(label).sample(n, random_state=np.random.RandomState(seed % 2**32))
        return features_to_boxes(feats).astype(np.float32).tolist()

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "features": ["cx", "cy", "log_w", "log_h"],
            "classes": {
                k: {"bandwidth": self.bandwidths[k], "points": self.points[k].tolist()} for k in sorted(self.points)
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> BoxPrior:
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported box prior format {d.get('format_version')!r}, expected {FORMAT_VERSION}")
        classes = d["classes"]
        return cls({k: v["points"] for k, v in classes.items()}, {k: float(v["bandwidth"]) for k, v in classes.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> BoxPrior:
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit(boxes: Sequence, labels: Sequence[str]) -> BoxPrior:
    """Module-level shortcut for ``BoxPrior.fit``."""
    return BoxPrior.fit(boxes, labels)


def load(path: str | Path) -> BoxPrior:
    """Module-level shortcut for ``BoxPrior.load``."""
    return BoxPrior.load(path)
