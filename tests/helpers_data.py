"""Build tiny Parquet datasets in the ingest layout for tests (no Ray needed).

Rows follow ``busgen.data.schema.INGEST_SCHEMA``: PNG-encoded images and masks, boxes
derived from masks with ``imageio.mask_to_box`` (null for empty masks), so tests
exercise the same decoding path as real ingested data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from busgen.data import schema
from busgen.data.imageio import encode_png, mask_to_box


def write_parquet_dataset(
    out_dir: str | Path,
    images: np.ndarray,
    masks: np.ndarray | None,
    labels: Sequence[str],
    domains: Sequence[str] | str = "phantom",
    splits: Sequence[str] | str = "train",
    rows_per_file: int = 64,
) -> Path:
    """Write images (N,H,W uint8) with masks/labels/domains/splits as Parquet files under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(images)
    domains = [domains] * n if isinstance(domains, str) else list(domains)
    splits = [splits] * n if isinstance(splits, str) else list(splits)
    rows = []
    for i in range(n):
        mask = None if masks is None or not masks[i].any() else masks[i]
        png = encode_png(images[i])
        rows.append(
            {
                schema.IMAGE: png,
                schema.MASK: None if mask is None else encode_png(mask),
                schema.BOX: mask_to_box(mask),
                schema.LABEL: labels[i],
                schema.DOMAIN: domains[i],
                schema.SPLIT: splits[i],
                schema.SOURCE: f"test/{i:06d}.png",
                schema.SHA256: hashlib.sha256(png).hexdigest(),
                schema.ORIG_WIDTH: images.shape[2],
                schema.ORIG_HEIGHT: images.shape[1],
            }
        )
    for part, s in enumerate(range(0, n, rows_per_file)):
        table = pa.Table.from_pylist(rows[s : s + rows_per_file], schema=schema.INGEST_SCHEMA)
        pq.write_table(table, out / f"part-{part:05d}.parquet")
    return out


def write_phantom_dataset(
    out_dir: str | Path, n: int, size: int = 32, seed: int = 0, styles: Sequence[str] = ("a",)
) -> Path:
    """Phantom images split evenly over device ``styles`` (one domain per style), all in the train split."""
    from busgen.data.phantom import make_phantom_arrays

    per = [n // len(styles) + (1 if k < n % len(styles) else 0) for k in range(len(styles))]
    parts = [make_phantom_arrays(m, size, seed + k, style=st) for k, (m, st) in enumerate(zip(per, styles))]
    images = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    labels = [lab for p in parts for lab in p[2]]
    domains = [f"phantom_{st}" for m, st in zip(per, styles) for _ in range(m)]
    return write_parquet_dataset(out_dir, images, masks, labels, domains, "train")
