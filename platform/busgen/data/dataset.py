"""Read ingested and synthetic datasets: one reader for real, synthetic and mixed data.

A dataset is a folder of Parquet files (any depth, hidden and ``_``-prefixed
folders ignored) plus ``dataset.json`` (ingest) or ``manifest.json`` (generation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from busgen.data import schema as S
from busgen.data.imageio import decode_image, to_model_range


class DatasetError(FileNotFoundError):
    """The path is not a dataset the platform can read."""


def parquet_files(path: str | Path) -> list[str]:
    """All Parquet files of a dataset, sorted; skips hidden, ``_staging`` and ``.tmp`` files."""
    root = Path(path)
    if root.is_file() and root.suffix == ".parquet":
        return [str(root)]
    if not root.is_dir():
        raise DatasetError(f"dataset {root} does not exist: run `busgen ingest` or `busgen generate` first")
    files = [
        p for p in root.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    ]
    if not files:
        raise DatasetError(f"dataset {root} holds no Parquet files: is it an ingest or generate output folder?")
    return sorted(str(p) for p in files)


def dataset_info(path: str | Path) -> dict:
    """Metadata of a dataset: ``dataset.json`` for ingested sets, ``manifest.json`` for synthetic ones."""
    root = Path(path)
    for name in (S.DATASET_JSON, "manifest.json"):
        if (root / name).is_file():
            return json.loads((root / name).read_text())
    return {}


def _split_filter(split: str | None, classes: Sequence[str] | None):
    expr = None
    if split is not None:
        expr = pc.field(S.SPLIT) == split
    if classes:
        cls_expr = pc.field(S.LABEL).isin(list(classes))
        expr = cls_expr if expr is None else expr & cls_expr
    return expr


def load(path: str | Path, split: str | None = None, classes: Sequence[str] | None = None):
    """Open a dataset as a (lazy, streaming) Ray Dataset.

    Args:
        path: dataset folder (ingested or synthetic).
        split: keep only rows of this split (synthetic rows are all 'train').
        classes: keep only these labels.
    """
    import ray

    ds = ray.data.read_parquet(parquet_files(path))
    expr = _split_filter(split, classes)
    if expr is not None:
        ds = ds.map_batches(
            _filter_table,
            batch_format="pyarrow",
            fn_kwargs={"split": split, "classes": list(classes) if classes else None},
        )
    return ds


def _filter_table(batch: pa.Table, split, classes) -> pa.Table:
    return batch.filter(_split_filter(split, classes))


def read_table(
    path: str | Path,
    columns: Sequence[str] | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
) -> pa.Table:
    """Read (part of) a dataset in-process with pyarrow: for small sets and metadata columns."""
    dataset = pads.dataset(parquet_files(path), format="parquet")
    cols = [c for c in columns if c in dataset.schema.names] if columns else None
    return dataset.to_table(columns=cols, filter=_split_filter(split, classes))


def decode_images(pngs: Sequence[bytes]) -> np.ndarray:
    """Decode a list of stored PNGs to a uint8 array (N, H, W)."""
    if len(pngs) == 0:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return np.stack([decode_image(b) for b in pngs])


def read_arrays(path: str | Path, split: str | None = None, classes: Sequence[str] | None = None):
    """Decode a (small) dataset into memory.

    Returns:
        (images uint8 (N, H, W), labels list[str], boxes list[list[float] | None], domains list[str])
    """
    table = read_table(path, [S.IMAGE, S.LABEL, S.BOX, S.DOMAIN], split, classes)
    images = decode_images(table.column(S.IMAGE).to_pylist())
    domains = (
        table.column(S.DOMAIN).to_pylist() if S.DOMAIN in table.column_names else [S.UNKNOWN_DOMAIN] * table.num_rows
    )
    boxes = table.column(S.BOX).to_pylist() if S.BOX in table.column_names else [None] * table.num_rows
    return images, table.column(S.LABEL).to_pylist(), boxes, domains


def batch_to_torch(batch: dict, class_names: Sequence[str]):
    """Ray/pyarrow batch dict -> (x float32 (B,1,H,W) in [-1,1], y int64 (B,)); unknown labels raise."""
    import torch

    index = {c: i for i, c in enumerate(class_names)}
    try:
        y = [index[str(lbl)] for lbl in batch[S.LABEL]]
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not one of the model's classes {list(class_names)}") from None
    x = to_model_range(decode_images(list(batch[S.IMAGE])))[:, None]
    return torch.from_numpy(x), torch.tensor(y, dtype=torch.int64)


def iter_torch_batches(
    path: str | Path, batch_size: int, class_names: Sequence[str], split: str | None = None
) -> Iterator:
    """Stream ``(image float tensor in [-1, 1], label int)`` batches from Parquet, one record batch at a time."""
    dataset = pads.dataset(parquet_files(path), format="parquet")
    for rb in dataset.to_batches(
        columns=[S.IMAGE, S.LABEL], filter=_split_filter(split, class_names), batch_size=batch_size
    ):
        if rb.num_rows:
            yield batch_to_torch(rb.to_pydict(), class_names)
