"""A copy of an ingested dataset whose train split is cut to a few images per class.

The privacy trade-off needs a generator that *does* memorise: on CPU that means training a
small generator for many epochs on few images. The held-out splits stay whole, so the DCR
attack and FID still compare against every non-member. ``repeat`` > 1 writes each kept
train row that many times: a feed for training only (Ray Train starts a Ray Data pass per
epoch, which dominates when an epoch is 2 steps); measure against the ``repeat=1`` copy, since
repeated members would hide copies from the k-NN audit (all k neighbours the same image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from busgen.data import schema as S
from busgen.data.combine import split_counts
from busgen.data.dataset import dataset_info, parquet_files


def train_subset_rows(labels: list[str], per_class: int, seed: int) -> np.ndarray:
    """Row positions of at most ``per_class`` images of each class, drawn without replacement (seeded), sorted."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    picks = []
    for c in sorted(set(labels)):
        idx = np.flatnonzero(labels_arr == c)
        picks.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=int)


def write_train_subset(src: str | Path, out: str | Path, per_class: int, seed: int = 0, repeat: int = 1) -> dict:
    """Write ``out`` = ``src`` with its train split cut to ``per_class`` images per class; returns dataset.json."""
    if per_class < 1 or repeat < 1:
        raise ValueError(f"error: per_class and repeat must be >= 1, got {per_class} and {repeat}")
    info = dataset_info(src)
    table = pa.concat_tables(pq.read_table(f) for f in parquet_files(src))
    is_train = pc.equal(table.column(S.SPLIT), "train")
    train, rest = table.filter(is_train), table.filter(pc.invert(is_train))
    keep = train_subset_rows(train.column(S.LABEL).to_pylist(), per_class, seed)
    subset = pa.concat_tables([train.take(pa.array(keep, type=pa.int64()))] * repeat + [rest])
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(subset, out / "data" / "part-000.parquet")
    new = {
        **info,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "subset_of": str(Path(src).resolve()),
        "subset": {"split": "train", "per_class": per_class, "seed": seed, "repeat": repeat},
        "counts": split_counts(subset),
        "n_images": subset.num_rows,
    }
    (out / S.DATASET_JSON).write_text(json.dumps(new, indent=2))
    return new
