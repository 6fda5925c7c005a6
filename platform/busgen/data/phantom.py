"""Deterministic breast-ultrasound phantom: the embedded default dataset.

Real BUS data cannot ship with the code, so tests, the demo and benchmarks use a
simulator whose images have the structure a BUS model must learn: tissue layers
(skin, subcutaneous fat, glandular tissue, pectoral muscle) with depth
attenuation, fully developed speckle, and lesions whose class shows in their
morphology, following the BI-RADS descriptors radiologists use:

* benign: oval, circumscribed, parallel (wider than tall), often posterior
  acoustic enhancement;
* malignant: irregular, spiculated margins, not parallel (taller than wide),
  posterior acoustic shadowing;
* normal: no lesion.

Each image i is drawn from its own RNG seeded by (seed, i), so a set is
reproducible image by image and any subset can be regenerated in isolation.
``style`` switches the acquisition "device": style ``b`` has a different gain,
coarser speckle, stronger attenuation and thinner fat, so that domain-adaptation
experiments have a visibly different second site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from busgen.data.imageio import encode_png

CLASSES = ("benign", "malignant", "normal")


@dataclass(frozen=True)
class DeviceStyle:
    """Acquisition settings of one simulated ultrasound device."""

    gain: float = 1.0  # overall brightness multiplier
    speckle_sigma: float = 0.6  # speckle correlation length, in pixels at 64 px
    attenuation: float = 1.2  # exp(-attenuation * depth) intensity fall-off
    fat_depth: float = 0.28  # bottom of the subcutaneous fat layer, fraction of depth
    gland_depth: float = 0.72  # bottom of the glandular layer
    dynamic_range: float = 1.0  # log-compression strength


STYLES = {
    "a": DeviceStyle(),
    "b": DeviceStyle(gain=1.45, speckle_sigma=1.6, attenuation=2.2, fat_depth=0.16, gland_depth=0.6, dynamic_range=0.7),
}


def make_phantom_image(
    rng: np.random.Generator, size: int, label: str, style: DeviceStyle
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one B-mode image and its lesion mask.

    Returns:
        (image uint8 (size, size), mask uint8 (size, size) with values {0, 255}).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size  # depth, lateral in [0, 1)
    echo = _tissue_echogenicity(rng, xx, yy, style)
    mask = np.zeros((size, size), dtype=bool)
    if label != "normal":
        mask, echo = _add_lesion(rng, xx, yy, echo, malignant=(label == "malignant"))
    echo = echo * np.exp(-style.attenuation * yy)  # depth attenuation (partly undone by TGC below)
    echo = echo * (1.0 + 0.6 * yy)  # time-gain compensation
    speckle = _speckle(rng, size, style.speckle_sigma * size / 64)
    intensity = style.gain * echo * speckle
    image = np.log1p(8.0 * style.dynamic_range * intensity) / np.log1p(8.0 * style.dynamic_range * 2.5)
    return np.clip(image * 255.0, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def _tissue_echogenicity(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, style: DeviceStyle) -> np.ndarray:
    """Layered mean echogenicity: bright skin, dark fat, bright gland, striated muscle."""

    def wavy(depth: float) -> np.ndarray:
        amp, freq, phase = rng.uniform(0.01, 0.04), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi)
        return depth + amp * np.sin(2 * np.pi * freq * xx + phase)

    skin, fat, gland = wavy(0.05), wavy(style.fat_depth), wavy(style.gland_depth)
    echo = np.where(yy < skin, 1.6, 0.0)
    echo = np.where((yy >= skin) & (yy < fat), 0.45, echo)
    gland_tex = 0.9 + 0.3 * np.sin(2 * np.pi * (rng.uniform(2, 5) * xx + rng.uniform(1, 3) * yy + rng.uniform(0, 6)))
    echo = np.where((yy >= fat) & (yy < gland), gland_tex, echo)
    stripes = 0.8 + 0.4 * (np.sin(2 * np.pi * rng.uniform(10, 16) * (yy + 0.1 * xx)) > 0.3)
    echo = np.where(yy >= gland, stripes, echo)
    return echo


def _add_lesion(
    rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, echo: np.ndarray, malignant: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a hypoechoic lesion into the glandular layer; returns (mask, echogenicity)."""
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.38, 0.55)
    theta = np.arctan2(yy - cy, xx - cx)
    if malignant:
        # Not parallel: taller than wide; irregular, spiculated margin.
        rx = rng.uniform(0.08, 0.14)
        ry = rx * rng.uniform(1.2, 1.6)
        harmonics = sum(rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (3, 5, 7))
        spikes = 0.35 * np.clip(np.cos(rng.integers(9, 15) * theta + rng.uniform(0, 2 * np.pi)), 0, None) ** 6
        radius = 1.0 + harmonics + spikes
        inside_level, shadow, below_gain = 0.12, True, 0.35
    else:
        # Parallel (wider than tall), oval and circumscribed.
        rx = rng.uniform(0.1, 0.18)
        ry = rx * rng.uniform(0.5, 0.75)
        radius = 1.0 + 0.03 * np.cos(2 * theta + rng.uniform(0, 2 * np.pi))
        inside_level, shadow, below_gain = 0.22, False, 1.35
    rho = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    mask = rho <= radius
    edge = 0.04 if malignant else 0.015  # blurred vs sharp margin
    weight = 1.0 / (1.0 + np.exp(np.clip((rho - radius) / edge, -50, 50)))
    echo = echo * (1 - weight) + inside_level * weight
    # Posterior acoustic feature: columns under the lesion are shadowed (malignant) or enhanced (benign).
    cols = mask.any(axis=0)
    bottom = np.where(mask.any(axis=0), mask.shape[0] - np.argmax(mask[::-1], axis=0), 0) / mask.shape[0]
    below = cols[None, :] & (yy > bottom[None, :])
    fade = np.exp(-(yy - bottom[None, :]).clip(0) * (4.0 if shadow else 6.0))
    factor = 1 + (below_gain - 1) * fade
    echo = np.where(below, echo * factor, echo)
    return mask, echo


def _speckle(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Fully developed speckle: magnitude of band-limited complex Gaussian noise (Rayleigh), mean ~1."""
    re = gaussian_filter(rng.standard_normal((size, size)), sigma)
    im = gaussian_filter(rng.standard_normal((size, size)), sigma)
    mag = np.sqrt(re**2 + im**2)
    return mag / (mag.mean() + 1e-12)


def phantom_label(i: int, classes: tuple[str, ...] = CLASSES) -> str:
    """Class of image i: cycles through the classes so every set is balanced."""
    return classes[i % len(classes)]


def make_phantom_arrays(
    n: int, size: int = 64, seed: int = 0, style: str = "a", classes: tuple[str, ...] = CLASSES, start: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Simulate n images in memory (for tests and small sets).

    Args:
        n: number of images.
        size: side length in pixels.
        seed: base seed; image i uses RNG seed (seed, start + i).
        style: device style key, see ``STYLES``.
        classes: class names to cycle through (subset of benign/malignant/normal).
        start: index of the first image, so chunks of a large set match the whole.

    Returns:
        images uint8 (n, size, size), masks uint8 (n, size, size), labels list[str].
    """
    images = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    labels = []
    for k, (img, mask, label) in enumerate(iter_phantom(n, size, seed, style, classes, start)):
        images[k], masks[k] = img, mask
        labels.append(label)
    return images, masks, labels


def iter_phantom(n: int, size: int, seed: int, style: str = "a", classes: tuple[str, ...] = CLASSES, start: int = 0):
    """Yield (image, mask, label) one at a time, so large sets stream in constant memory."""
    if n < 0 or size < 16:
        raise ValueError(f"need n >= 0 and size >= 16, got n={n}, size={size}")
    if style not in STYLES:
        raise ValueError(f"unknown phantom style {style!r}; choose one of {sorted(STYLES)}")
    unknown = set(classes) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown phantom classes {sorted(unknown)}; choose from {CLASSES}")
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        label = phantom_label(i, classes)
        img, mask = make_phantom_image(rng, size, label, STYLES[style])
        yield img, mask, label


PHANTOM_README = """\
# Phantom breast-ultrasound images (busgen.data.phantom)

Synthetic phantoms drawn by BUSGen's own code: no patient data.

- Licence: **Apache-2.0**, like the BUSGen platform code that draws them.
"""


def write_phantom(
    out_dir: str | Path, n: int, size: int = 64, seed: int = 0, style: str = "a", classes: tuple[str, ...] = CLASSES
) -> Path:
    """Write a phantom set in the BUSI layout: ``<class>/phantom_<i>.png`` plus ``_mask.png`` siblings.

    Normal images get no mask file, as in BUSI's layout where normal masks are empty.
    """
    out = Path(out_dir)
    for c in classes:
        (out / c).mkdir(parents=True, exist_ok=True)
    for i, (img, mask, label) in enumerate(iter_phantom(n, size, seed, style, classes)):
        stem = f"phantom_{style}_{i:06d}"
        (out / label / f"{stem}.png").write_bytes(encode_png(img))
        if label != "normal":
            (out / label / f"{stem}_mask.png").write_bytes(encode_png(mask))
    (out / "README.md").write_text(PHANTOM_README)  # ingest reads the licence from it (busgen.data.licences)
    return out
