"""Nearest training image of each generated image: the playground's per-image privacy check.

A generator that copies its training set shows a near-1 similarity here. Features are
the zero-mean, unit-norm pixels of a 32x32 thumbnail, so the similarity is a Pearson
correlation in [-1, 1]; it flags copies and near-copies (the memorisation the paper's
privacy audit looks for), not semantic likeness. The full audit, with a learned
encoder, is ``busgen eval`` (``busgen.measure.privacy``), which serve does not import.
"""

from __future__ import annotations

import base64

import numpy as np

from busgen.data.imageio import decode_image, resize_square

THUMB = 32


def features(images: list[np.ndarray]) -> np.ndarray:
    """uint8 (H, W) images -> float32 (N, THUMB*THUMB) rows of zero mean and unit norm."""
    x = np.stack([resize_square(img, THUMB, "pad") for img in images]).reshape(len(images), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


class NearestIndex:
    """Exact cosine search over the reference (training) images; a few thousand rows take milliseconds."""

    def __init__(self, pngs: list[bytes], sources: list[str]):
        if not pngs:
            raise ValueError("the reference set is empty: nearest-neighbour checks need training images")
        self.pngs, self.sources = pngs, sources
        self.feats = features([decode_image(p) for p in pngs])

    def query(self, pngs: list[bytes]) -> list[dict]:
        """For each PNG: the most similar reference image (base64 PNG), its similarity and its source id."""
        sims = features([decode_image(p) for p in pngs]) @ self.feats.T
        best = sims.argmax(1)
        return [
            {
                "similarity": round(float(sims[i, j]), 4),
                "source": self.sources[j],
                "image": base64.b64encode(self.pngs[j]).decode("ascii"),
            }
            for i, j in enumerate(best)
        ]
