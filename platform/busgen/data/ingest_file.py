"""Pass 2 of ingest: turn one discovered image into a staged row, inside Ray Data tasks.

A per-file step must never take the whole ingest down: every exception (a corrupt
file, a pydicom oddity, a MemoryError on one huge frame) becomes a row with
``error`` and ``error_type`` set, which the driver turns into a quarantine row. Only
a crash of the worker process itself escapes (Ray then retries the task).
Reads go through ``paths.read_regular_file`` (no symlinks, size cap) and decoders
get the run's pixel caps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from busgen.core.csvcells import printable
from busgen.data import schema as S
from busgen.data.dicom import MAX_DECODED_BYTES, decode_dicom, looks_like_dicom
from busgen.data.imageio import MAX_PIXELS, decode_image, encode_png, mask_to_box, resize_square
from busgen.data.paths import read_regular_file

UID = "uid"  # int id of a task within one run: the key of every decision (sources may repeat or be hashed)
PIXEL_SHA = "pixel_sha"
ERROR = "error"
ERROR_TYPE = "error_type"

STAGE_SCHEMA = (
    S.INGEST_SCHEMA.append(pa.field(UID, pa.int64()))
    .append(pa.field(PIXEL_SHA, pa.string()))
    .append(pa.field(ERROR, pa.string()))
    .append(pa.field(ERROR_TYPE, pa.string()))
)


@dataclass(frozen=True)
class FileLimits:
    """Per-file caps of one run (``IngestConfig`` fields, in bytes and pixels)."""

    max_pixels: int = MAX_PIXELS
    max_file_bytes: int = 512 * 2**20
    max_decoded_bytes: int = MAX_DECODED_BYTES


def read_any_image(
    data: bytes, path: str, max_pixels: int = MAX_PIXELS, max_decoded_bytes: int = MAX_DECODED_BYTES
) -> np.ndarray:
    """Decode image bytes of any supported kind (DICOM by magic or extension) to uint8 grayscale, within caps."""
    if looks_like_dicom(data, path):
        return decode_dicom(data, max_pixels, max_decoded_bytes)
    return decode_image(data, max_pixels)


def _read_mask(paths: list[str], shape: tuple[int, int], limits: FileLimits) -> np.ndarray | None:
    """Union of all mask files of one image, at the image's original shape, as {0, 255}."""
    if not paths:
        return None
    union = np.zeros(shape, dtype=bool)
    for p in paths:
        m = decode_image(read_regular_file(p, limits.max_file_bytes), limits.max_pixels)
        if m.shape != shape:
            m = resize_square_to(m, shape)
        union |= m > 127
    return union.astype(np.uint8) * 255


def resize_square_to(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((shape[1], shape[0]), Image.NEAREST), dtype=np.uint8)


def _read_image(row: dict, task: dict, limits: FileLimits) -> np.ndarray:
    data = read_regular_file(task["path"], limits.max_file_bytes)
    row[S.SHA256] = hashlib.sha256(data).hexdigest()
    img = read_any_image(data, task["path"], limits.max_pixels, limits.max_decoded_bytes)
    row[S.ORIG_HEIGHT], row[S.ORIG_WIDTH] = img.shape
    row[PIXEL_SHA] = hashlib.sha256(img.tobytes() + str(img.shape).encode()).hexdigest()
    return img


def _encode(row: dict, img: np.ndarray, mask: np.ndarray | None, size: int, resize_mode: str) -> None:
    row[S.IMAGE] = encode_png(resize_square(img, size, resize_mode))
    if mask is not None:
        small = resize_square(mask, size, resize_mode, nearest=True)
        row[S.MASK] = encode_png(small)
        row[S.BOX] = mask_to_box(small)


def _error_message(exc: Exception, task: dict, redact: bool) -> str:
    """The exception's message, without file paths when ``redact`` is on (they may name a patient)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror  # OSError's str() repeats the full path
    if redact:
        message = message.replace(task["path"], task["source"])
        for m in task.get("mask_paths") or []:
            message = message.replace(m, "<mask>")
    return printable(message[:500])  # an odd byte in a message must not fail the Parquet write of the batch


def process_task(
    task: dict, size: int, resize_mode: str, default_domain: str, limits: FileLimits | None = None, redact: bool = False
) -> dict:
    """Turn one discovered image into a staged row; any failure becomes a row with ``error`` set.

    ``task`` holds ``uid, path, source`` (the public, possibly redacted id), ``label,
    mask_paths, split, domain``.
    """
    limits = limits or FileLimits()
    row = {k: None for k in STAGE_SCHEMA.names}
    row.update(uid=task["uid"], label=task["label"], source=task["source"], split=task.get("split"))
    row[S.DOMAIN] = task.get("domain") or default_domain
    stage = "image"
    try:
        img = _read_image(row, task, limits)
        stage = "mask"
        mask = _read_mask(task.get("mask_paths") or [], img.shape, limits)
        stage = "encode"
        _encode(row, img, mask, size, resize_mode)
    except Exception as exc:  # by design: one bad file must never stop the run (see module docstring)
        message = _error_message(exc, task, redact)
        for k in (S.IMAGE, S.MASK, S.BOX, PIXEL_SHA):
            row[k] = None
        row[ERROR] = f"mask unreadable: {message}" if stage == "mask" else message
        row[ERROR_TYPE] = type(exc).__name__
    return row


def process_batch(
    batch: pa.Table,
    size: int,
    resize_mode: str,
    default_domain: str,
    limits: FileLimits | None = None,
    redact: bool = False,
) -> pa.Table:
    rows = [process_task(t, size, resize_mode, default_domain, limits, redact) for t in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)
