"""Image decoding, encoding and resizing: the one place pixels change format.

Every stored image is 8-bit grayscale PNG bytes. Decoding is guarded against
decompression bombs and corrupt bytes so that ingest and serving can turn bad
input into a clear error instead of a crash.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

# Largest image (or DICOM frame) decoded, checked from the header before any pixel
# is decoded. BUS frames are at most a few megapixels (1024x768 to 2000x1500), so
# 16 MP (4096 x 4096) leaves room while staying far below PIL's own bomb warning
# (89 MP): the worst accepted 16-bit PNG costs about 32 MiB of pixels plus a 16 MiB
# uint8 copy. Ingest and serving pass their own (configurable) caps.
MAX_PIXELS = 4096 * 4096

ResizeMode = Literal["pad", "crop", "stretch"]


class ImageDecodeError(ValueError):
    """Raised when bytes are not a decodable image; the message names the reason."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF bytes to a 2-D uint8 grayscale array.

    Args:
        data: raw file bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Returns:
        np.ndarray of shape (H, W), dtype uint8.

    Raises:
        ImageDecodeError: empty, truncated, unknown-format or oversized input.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"image too large: {w}x{h} exceeds {max_pixels} pixels")
            if w < 1 or h < 1:
                raise ImageDecodeError(f"image has no pixels: {w}x{h}")
            img.load()
            return to_gray(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unknown format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None


def to_gray(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to uint8 grayscale, scaling 16-bit data to 8 bits."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return scale_to_uint8(np.asarray(img))
    return np.asarray(img.convert("L"), dtype=np.uint8)


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric 2-D array to uint8 (for DICOM and 16-bit PNG).

    Integer data of at most 16 bits goes through a 65,536-entry lookup table, so a
    16 MP 16-bit frame costs one uint8 output (16 MiB) instead of float64 copies
    (128 MiB each); other data is scaled in float32.
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = arr.min(), arr.max()
    if not np.isfinite(lo) or not np.isfinite(hi):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = arr.min(), arr.max()
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize > 2 and 0 <= lo and hi <= 0xFFFF:
        arr = arr.astype(np.uint16)  # PIL's mode "I" holds 16-bit PNGs in int32
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # big-endian 16-bit PNG/DICOM
        return _integer_lut(arr.dtype, int(lo), int(hi))[arr.view(f"u{arr.dtype.itemsize}")]
    scale = np.float32(255.0 / (float(hi) - float(lo)))
    out = (arr.astype(np.float32) - np.float32(lo)) * scale + np.float32(0.5)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _integer_lut(dtype: np.dtype, lo: int, hi: int) -> np.ndarray:
    """uint8 value of every possible bit pattern of an 8/16-bit integer type, min-max scaled."""
    bits = 8 * dtype.itemsize
    values = np.arange(2**bits, dtype=np.float32)
    if dtype.kind == "i":
        values[2 ** (bits - 1) :] -= 2**bits  # two's complement: the upper half holds negatives
    out = (values - lo) * np.float32(255.0 / (hi - lo)) + np.float32(0.5)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode_png(arr: np.ndarray) -> bytes:
    """Encode a 2-D uint8 array as PNG bytes (deterministic: same pixels, same bytes)."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"encode_png expects uint8, got {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def resize_square(arr: np.ndarray, size: int, mode: ResizeMode = "pad", nearest: bool = False) -> np.ndarray:
    """Resize a grayscale array to size x size.

    ``pad`` keeps the aspect ratio and pads the short side with zeros (black,
    like the ultrasound background) centred; ``crop`` keeps the aspect ratio and
    centre-crops the long side; ``stretch`` ignores the aspect ratio (BUSI's
    128 px copy was made that way). Masks use ``nearest`` so they stay binary.
    """
    h, w = arr.shape
    resample = Image.NEAREST if nearest else Image.LANCZOS
    img = Image.fromarray(arr)
    if mode == "stretch" or h == w:
        return np.asarray(img.resize((size, size), resample), dtype=np.uint8)
    scale = size / max(h, w) if mode == "pad" else size / min(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(img.resize((nw, nh), resample), dtype=np.uint8)
    if mode == "pad":
        out = np.zeros((size, size), dtype=np.uint8)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top : top + nh, left : left + nw] = resized
        return out
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top : top + size, left : left + size]


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) resized to (N, size, size), bilinear and antialiased; the same array when it already fits.

    Sets made at another side meet here: a 32 px generator's images mixed into 64 px real
    data for a classifier, or real images scored by a generator trained at another size.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch  # lazily: ingest and serving decode images without torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def mask_to_box(mask: np.ndarray | None) -> list[float] | None:
    """Bounding box [x0, y0, x1, y1] of the non-zero pixels, normalised to [0, 1].

    Returns None for a missing or empty mask (normal images have no lesion).
    """
    if mask is None:
        return None
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], the range the diffusion model and classifier use.

    This module owns the pixel convention: every other module converts through these three
    functions, so a change of range is one edit.
    """
    return images.astype(np.float32) / 127.5 - 1.0


def to_model_tensor(images: np.ndarray):
    """uint8 (N, H, W) -> float32 torch tensor (N, 1, H, W) in [-1, 1].

    torch is imported here, not at the top: the data stage stays importable without it.
    """
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0).unsqueeze(1)


def from_model_range(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> uint8 [0, 255] with rounding and clipping."""
    return np.clip((np.asarray(x) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
