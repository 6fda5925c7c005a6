"""Nearest training image of each generated image: the playground's per-image privacy check.

A generator that copies its training set shows a near-1 similarity here. Features are
the zero-mean, unit-norm pixels of a 32x32 thumbnail, so the similarity is a Pearson
correlation in [-1, 1]; it flags copies and near-copies (the memorisation the paper's
privacy audit looks for), not semantic likeness. The full audit, with a learned
encoder, is ``busgen eval`` (``busgen.measure.privacy``), which serve does not import.

A bare number means little, so every answer carries its yardstick:

* ``COPY_THRESHOLD`` (0.95): at or above it an image is flagged "possible copy". Measured
  on BUSI at 64 px (778 images): 40% of the real images have another real image at >= 0.95
  (frames of one scan session: BUSI holds several per patient), while 400 images of the
  H100-trained generator reach at most ~0.89 (median 0.67). So >= 0.95 means "as close to a
  training image as two frames of one session are": worth a look before sharing.
* ``percentile``: where the similarity falls among the reference set's own real-to-real
  nearest-neighbour similarities (computed once, on up to ``CALIBRATION_ROWS`` rows).
"""

from __future__ import annotations

import base64

import numpy as np

from busgen.data.imageio import decode_image, resize_square

THUMB = 32
COPY_THRESHOLD = 0.95
CALIBRATION_ROWS = 2000  # real-to-real nearest neighbours: 2000^2 similarities take ~0.1 s
METRIC = f"Pearson correlation of {THUMB}x{THUMB} thumbnails (pixels, no learned encoder); 1 = identical"


def features(images: list[np.ndarray]) -> np.ndarray:
    """uint8 (H, W) images -> float32 (N, THUMB*THUMB) rows of zero mean and unit norm."""
    x = np.stack([resize_square(img, THUMB, "pad") for img in images]).reshape(len(images), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def real_to_real(feats: np.ndarray, max_rows: int = CALIBRATION_ROWS) -> np.ndarray:
    """Sorted similarity of each reference image to its nearest *other* reference image (a seeded subsample)."""
    if len(feats) < 2:
        return np.zeros(0, np.float32)
    rows = np.random.default_rng(0).choice(len(feats), min(max_rows, len(feats)), replace=False)
    sims = feats[rows] @ feats.T
    sims[np.arange(len(rows)), rows] = -np.inf  # an image is not its own neighbour
    return np.sort(sims.max(1))


class NearestIndex:
    """Exact cosine search over the reference (training) images; a few thousand rows take milliseconds."""

    def __init__(self, pngs: list[bytes], sources: list[str]):
        if not pngs:
            raise ValueError("the reference set is empty: nearest-neighbour checks need training images")
        self.pngs, self.sources = pngs, sources
        self.feats = features([decode_image(p) for p in pngs])
        self.real_nn = real_to_real(self.feats)

    def describe(self) -> dict:
        """The yardstick sent with every answer: what the number is, the threshold, the reference's own spread."""
        median = float(np.median(self.real_nn)) if len(self.real_nn) else None
        return {
            "metric": METRIC,
            "threshold": COPY_THRESHOLD,
            "reference_median": None if median is None else round(median, 4),
            "reference_size": len(self.pngs),
        }

    def percentile(self, similarity: float) -> float | None:
        """Share (%) of reference images whose nearest other reference image is less similar than this."""
        if not len(self.real_nn):
            return None
        return round(100.0 * np.searchsorted(self.real_nn, similarity, side="left") / len(self.real_nn), 1)

    def query(self, pngs: list[bytes]) -> list[dict]:
        """For each PNG: the most similar reference image (base64 PNG), its similarity, verdict and source id."""
        sims = features([decode_image(p) for p in pngs]) @ self.feats.T
        best = sims.argmax(1)
        out = []
        for i, j in enumerate(best):
            similarity = round(float(sims[i, j]), 4)
            out.append(
                {
                    "similarity": similarity,
                    "possible_copy": similarity >= COPY_THRESHOLD,
                    "percentile": self.percentile(similarity),
                    "source": self.sources[j],
                    "image": base64.b64encode(self.pngs[j]).decode("ascii"),
                }
            )
        return out
