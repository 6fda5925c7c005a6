"""Pass 3 of ingest: decide, from small columns only, which staged rows to keep and their splits.

Decisions are keyed by the run's task ``uid``, never by the source string: a
source may be listed twice or be a salted hash. Ordering (which of two identical
images is kept, the seeded split shuffle) uses the plain relative paths held in
the driver's memory, so results do not change when paths are redacted.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from busgen.data import schema as S
from busgen.data.ingest_file import ERROR, ERROR_TYPE, PIXEL_SHA, UID
from busgen.data.sources import DuplicateEntry, QuarantineEntry

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # train / val / test when the source gives no split


@dataclass
class Decisions:
    keep: dict[int, str]  # uid -> split of every row to write
    duplicates: list[DuplicateEntry]
    quarantine: list[QuarantineEntry]


def decide(meta: pa.Table, seed: int, order: dict[int, str] | None = None) -> Decisions:
    """Decide from (uid, source, label, split, pixel_sha, error, error_type) which rows to keep.

    Args:
        meta: the staged small columns.
        seed: seed of the stratified split for rows without a given split.
        order: uid -> sort key (the plain relative path); defaults to the source column.
    """
    rows = meta.to_pylist()
    order = order or {r[UID]: r[S.SOURCE] for r in rows}
    rows.sort(key=lambda r: order[r[UID]])
    quarantine, duplicates, kept = [], [], []
    by_pixels: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r[ERROR]:
            quarantine.append(QuarantineEntry(r[S.SOURCE], r[ERROR], r[S.LABEL], r.get(ERROR_TYPE) or ""))
        elif r[S.SPLIT] and r[S.SPLIT] not in S.SPLITS:
            quarantine.append(
                QuarantineEntry(r[S.SOURCE], f"unknown split {r[S.SPLIT]!r} (use one of {S.SPLITS})", r[S.LABEL])
            )
        else:
            by_pixels[r[PIXEL_SHA]].append(r)
    for group in by_pixels.values():
        labels = sorted({r[S.LABEL] for r in group})
        if len(labels) > 1:
            others = ", ".join(f"{r[S.SOURCE]} ({r[S.LABEL]})" for r in group)
            quarantine += [
                QuarantineEntry(r[S.SOURCE], f"label conflict: identical pixels in {others}", r[S.LABEL]) for r in group
            ]
            continue
        kept.append(group[0])
        duplicates += [
            DuplicateEntry(r[S.SOURCE], group[0][S.SOURCE], r[S.LABEL], "identical pixels") for r in group[1:]
        ]
    return Decisions(assign_splits(kept, seed, order), duplicates, quarantine)


def assign_splits(rows: list[dict], seed: int, order: dict[int, str]) -> dict[int, str]:
    """Keep given splits; split the rest stratified by label, 70/15/15, seeded and order-independent."""
    keep = {r[UID]: r[S.SPLIT] for r in rows if r[S.SPLIT]}
    by_label: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        if not r[S.SPLIT]:
            by_label[r[S.LABEL]].append(r[UID])
    for label, uids in sorted(by_label.items()):
        uids.sort(key=lambda u: order[u])
        random.Random(f"{seed}:{label}").shuffle(uids)
        n = len(uids)
        # cumulative boundaries so the three parts always add up to n
        n_train = int(round(n * SPLIT_FRACTIONS[0]))
        n_train_val = int(round(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])))
        for i, uid in enumerate(uids):
            keep[uid] = "train" if i < n_train else ("val" if i < n_train_val else "test")
    return keep


def finalize_batch(batch: pa.Table, keep: dict[int, str]) -> pa.Table:
    """Drop rows not kept and set their final split (runs in Ray Data tasks)."""
    uids = batch.column(UID).to_pylist()
    idx = [i for i, u in enumerate(uids) if u in keep]
    out = batch.take(pa.array(idx, type=pa.int64())).select(S.INGEST_SCHEMA.names)
    splits = pa.array([keep[uids[i]] for i in idx], type=pa.string())
    return out.set_column(out.schema.get_field_index(S.SPLIT), S.SPLIT, splits).cast(S.INGEST_SCHEMA)
