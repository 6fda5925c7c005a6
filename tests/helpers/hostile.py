"""Hostile inputs shared by the hardening tests: a Deflated DICOM bomb, and small served data sets.

The data sets are written with whatever labels, domains and class names a test passes,
so a test can serve ``<img onerror=...>`` names as easily as plain ones.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from busgen.data import schema as S
from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from helpers.data import dicom_bytes
from helpers.models import CLASSES

SIZE = 32
DEFLATED = "1.2.840.10008.1.2.1.99"
MIB = 2**20
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def deflated_bomb(inflated_mib: int) -> bytes:
    """A well-formed Deflated DICOM of a 64x64 image whose PixelData element is ``inflated_mib`` MiB of zeros.

    Built by streaming the compressor, so the test itself never holds the inflated body.
    """
    small = dicom_bytes(np.zeros((64, 64), np.uint8), transfer_syntax=DEFLATED)
    meta_end = 132 + 12 + int.from_bytes(small[140:144], "little")  # (0002,0000) group length value
    body = zlib.decompress(small[meta_end:], -zlib.MAX_WBITS)
    header = body[: body.index(PIXEL_DATA_TAG)]
    length = inflated_mib * MIB
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [packer.compress(header + PIXEL_DATA_TAG + b"OB\x00\x00" + length.to_bytes(4, "little"))]
    zeros = bytes(MIB)
    parts += [packer.compress(zeros) for _ in range(inflated_mib)]
    return small[:meta_end] + b"".join(parts) + packer.flush()


def write_reference(path, n: int = 8):
    """An ingested-style set (phantom images with label, domain, source): the nearest-image reference."""
    images, _, labels = make_phantom_arrays(n, SIZE, seed=3)
    names = [CLASSES[k] if isinstance(k, (int, np.integer)) else str(k) for k in labels]
    pq.write_table(
        pa.table(
            {
                S.IMAGE: [encode_png(im) for im in images],
                S.LABEL: names,
                S.DOMAIN: ["phantom"] * n,
                S.SOURCE: [f"phantom/{i:03d}.png" for i in range(n)],
            }
        ),
        path,
    )
    return path


def write_gallery(folder, n: int = 8):
    """A generated-style set with provenance columns (model id, seed, sampler)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pq.write_table(
        pa.table(
            {
                S.IMAGE: [encode_png(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)) for _ in range(n)],
                S.LABEL: [CLASSES[i % 2] for i in range(n)],
                S.DOMAIN: ["phantom"] * n,
                S.SEED: list(range(n)),
                S.MODEL_ID: ["tiny-0001"] * n,
                S.SAMPLER: ["ddim"] * n,
            }
        ),
        folder / "shard-00000.parquet",
    )
    return folder


def save_random_classifier(out_dir, class_names=CLASSES) -> str:
    """A randomly initialised small classifier folder: serving tests check plumbing, not accuracy."""
    import torch

    from busgen.model import classifier

    torch.manual_seed(0)
    cfg = classifier.ClassifierConfig.small(image_size=SIZE)
    classifier.save_classifier(out_dir, classifier.build_model(cfg, len(class_names)), cfg, list(class_names))
    return str(out_dir)
