"""Ingest BUS datasets into the platform's Parquet layout with Ray Data.

The job runs in three passes so that image bytes never collect in the driver:

1. discover (driver, file names only; see ``busgen.data.sources``);
2. decode + resize + hash every image in Ray Data tasks, written to a staging
   Parquet folder (bad files become rows with an ``error`` instead of crashing);
3. the driver reads only the small columns (hashes, labels, errors) to decide
   duplicates, label conflicts and splits, and a second Ray Data pass writes the
   final rows.

Nothing silently disappears: every input file ends up ingested, in
``duplicates.csv`` (exact pixel duplicate of a kept image with the same label),
or in ``quarantine.csv`` with a reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from busgen.core.types import ResizeMode
from busgen.data import schema as S
from busgen.data.imageio import ImageDecodeError, decode_image, encode_png, mask_to_box, resize_square, scale_to_uint8
from busgen.data.sources import QuarantineEntry, SourceError, discover

STAGING_DIR = "_staging"
DATA_DIR = "data"
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # train / val / test when the source gives no split

_STAGE_SCHEMA = S.INGEST_SCHEMA.append(pa.field("pixel_sha", pa.string())).append(pa.field("error", pa.string()))


class IngestConfig(BaseModel):
    """Options of one ingest run."""

    model_config = ConfigDict(extra="forbid")

    size: int = 128  # side of the stored square images, pixels
    resize_mode: ResizeMode = (
        "pad"  # pad: keep aspect, zero-pad the short side | crop: keep aspect, centre-crop | stretch
    )
    domain: str | None = None  # device/site id for every row; default: a 'domain' manifest column, else the source name
    classes: list[str] | None = None  # allowed labels; others go to quarantine
    seed: int = 0  # seed of the stratified split when the source gives none
    overwrite: bool = False  # replace an existing output dataset


@dataclass
class IngestSummary:
    out_dir: str
    n_discovered: int
    n_ingested: int
    n_duplicates: int
    n_quarantined: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"ingested {self.n_ingested} images, dropped {self.n_duplicates} exact duplicates, "
            f"quarantined {self.n_quarantined} (see quarantine.csv) -> {self.out_dir} in {self.seconds:.1f}s"
        )


class IngestError(RuntimeError):
    """The ingest cannot start or finish (bad source, existing output)."""


# ---------------------------------------------------------------------------
# Pass 2: per-image work, run inside Ray Data tasks
# ---------------------------------------------------------------------------


def read_any_image(data: bytes, path: str) -> np.ndarray:
    """Decode image bytes of any supported kind (DICOM by magic or extension) to uint8 grayscale."""
    if path.lower().endswith((".dcm", ".dicom")) or data[128:132] == b"DICM":
        return _decode_dicom(data)
    return decode_image(data)


def _decode_dicom(data: bytes) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        arr = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # pydicom raises many kinds for bad files
        raise ImageDecodeError(f"unreadable DICOM: {exc}") from None
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        arr = arr[0]  # multi-frame cine loop: keep the first frame
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1)  # RGB ultrasound capture -> gray
    arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr
    return scale_to_uint8(arr)


def _read_mask(paths: list[str], shape: tuple[int, int]) -> np.ndarray | None:
    """Union of all mask files of one image, at the image's original shape, as {0, 255}."""
    if not paths:
        return None
    union = np.zeros(shape, dtype=bool)
    for p in paths:
        m = decode_image(Path(p).read_bytes())
        if m.shape != shape:
            m = resize_square_to(m, shape)
        union |= m > 127
    return union.astype(np.uint8) * 255


def resize_square_to(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((shape[1], shape[0]), Image.NEAREST), dtype=np.uint8)


def process_task(task: dict, size: int, resize_mode: str, default_domain: str) -> dict:
    """Turn one discovered image into a staged row; failures become rows with ``error`` set."""
    row = {k: None for k in _STAGE_SCHEMA.names}
    row.update(label=task["label"], source=task["source"], split=task.get("split"))
    row[S.DOMAIN] = task.get("domain") or default_domain
    try:
        data = Path(task["path"]).read_bytes()
        row[S.SHA256] = hashlib.sha256(data).hexdigest()
        img = read_any_image(data, task["path"])
    except (ImageDecodeError, OSError) as exc:
        row["error"] = str(exc)
        return row
    row[S.ORIG_HEIGHT], row[S.ORIG_WIDTH] = img.shape
    row["pixel_sha"] = hashlib.sha256(img.tobytes() + str(img.shape).encode()).hexdigest()
    try:
        mask = _read_mask(task.get("mask_paths") or [], img.shape)
    except (ImageDecodeError, OSError) as exc:
        row["error"] = f"mask unreadable: {exc}"
        return row
    row[S.IMAGE] = encode_png(resize_square(img, size, resize_mode))
    if mask is not None:
        small = resize_square(mask, size, resize_mode, nearest=True)
        row[S.MASK] = encode_png(small)
        row[S.BOX] = mask_to_box(small)
    return row


def process_batch(batch: "pa.Table", size: int, resize_mode: str, default_domain: str) -> pa.Table:
    rows = [process_task(t, size, resize_mode, default_domain) for t in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=_STAGE_SCHEMA)


# ---------------------------------------------------------------------------
# Pass 3 decisions (driver, small columns only)
# ---------------------------------------------------------------------------


@dataclass
class Decisions:
    keep: dict[str, str]  # source -> split of every row to write
    duplicates: list[dict]
    quarantine: list[QuarantineEntry]


def decide(meta: pa.Table, seed: int) -> Decisions:
    """Decide, from (source, label, split, pixel_sha, error) alone, which rows to keep and their splits."""
    rows = sorted(meta.to_pylist(), key=lambda r: r["source"])
    quarantine, duplicates, kept = [], [], []
    by_pixels: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["error"]:
            quarantine.append(QuarantineEntry(r["source"], r["error"], r["label"]))
        elif r["split"] and r["split"] not in S.SPLITS:
            quarantine.append(
                QuarantineEntry(r["source"], f"unknown split {r['split']!r} (use one of {S.SPLITS})", r["label"])
            )
        else:
            by_pixels[r["pixel_sha"]].append(r)
    for group in by_pixels.values():
        labels = sorted({r["label"] for r in group})
        if len(labels) > 1:
            others = ", ".join(f"{r['source']} ({r['label']})" for r in group)
            quarantine += [
                QuarantineEntry(r["source"], f"label conflict: identical pixels in {others}", r["label"]) for r in group
            ]
            continue
        kept.append(group[0])
        duplicates += [
            {"source": r["source"], "duplicate_of": group[0]["source"], "label": r["label"]} for r in group[1:]
        ]
    return Decisions(assign_splits(kept, seed), duplicates, quarantine)


def assign_splits(rows: list[dict], seed: int) -> dict[str, str]:
    """Keep given splits; split the rest stratified by label, 70/15/15, seeded and order-independent."""
    keep = {r["source"]: r["split"] for r in rows if r["split"]}
    by_label: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if not r["split"]:
            by_label[r["label"]].append(r["source"])
    for label, sources in sorted(by_label.items()):
        sources.sort()
        random.Random(f"{seed}:{label}").shuffle(sources)
        n = len(sources)
        # cumulative boundaries so the three parts always add up to n
        n_train = int(round(n * SPLIT_FRACTIONS[0]))
        n_train_val = int(round(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])))
        for i, src in enumerate(sources):
            keep[src] = "train" if i < n_train else ("val" if i < n_train_val else "test")
    return keep


def finalize_batch(batch: pa.Table, keep: dict[str, str]) -> pa.Table:
    """Drop rows not kept and set their final split (runs in Ray Data tasks)."""
    sources = batch.column(S.SOURCE).to_pylist()
    idx = [i for i, s in enumerate(sources) if s in keep]
    out = batch.take(pa.array(idx, type=pa.int64())).select(S.INGEST_SCHEMA.names)
    splits = pa.array([keep[sources[i]] for i in idx], type=pa.string())
    return out.set_column(out.schema.get_field_index(S.SPLIT), S.SPLIT, splits).cast(S.INGEST_SCHEMA)


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def ingest(
    src: str | Path, out_dir: str | Path, cfg: IngestConfig | None = None, progress: bool = True
) -> IngestSummary:
    """Ingest ``src`` into a Parquet dataset at ``out_dir``.

    Args:
        src: class-folder tree, folder with labels.csv, or a CSV manifest.
        out_dir: output dataset folder (``data/*.parquet``, ``dataset.json``, ``quarantine.csv``, ``duplicates.csv``).
        cfg: options; defaults to ``IngestConfig()``.
        progress: show Ray Data's progress bars.

    Raises:
        IngestError: missing/empty source, malformed manifest, or an existing output without ``overwrite``.
    """
    import ray

    from busgen.core.raylocal import init_ray, quiet_ray_data_progress

    cfg = cfg or IngestConfig()
    t0 = time.time()
    src, out = Path(src), Path(out_dir)
    try:
        found = discover(src)
    except SourceError as exc:
        raise IngestError(str(exc)) from None
    _prepare_out(out, cfg.overwrite)
    tasks, quarantine = _filter_classes(found.tasks, found.quarantine, cfg.classes)
    default_domain = cfg.domain or (src.stem if src.is_file() else src.name)
    init_ray()
    quiet_ray_data_progress(progress)

    # 1. decode/resize/hash in parallel tasks -> staging Parquet
    staging = out / STAGING_DIR
    items = [
        {
            "path": t.path,
            "source": t.source,
            "label": t.label,
            "mask_paths": t.mask_paths,
            "split": t.split,
            "domain": cfg.domain or t.domain,
        }
        for t in tasks
    ]
    n_blocks = max(1, min(len(items) // 64, 200))
    ds = ray.data.from_items(items, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        process_batch,
        batch_format="pyarrow",
        batch_size=64,
        fn_kwargs={"size": cfg.size, "resize_mode": cfg.resize_mode, "default_domain": default_domain},
    )
    ds.write_parquet(str(staging))
    del items

    # 2. decide from small columns only
    meta = pq.read_table(staging, columns=[S.SOURCE, S.LABEL, S.SPLIT, "pixel_sha", "error"])
    decisions = decide(meta, cfg.seed)
    del meta

    # 3. final rows
    keep_ref = ray.put(decisions.keep)
    final = ray.data.read_parquet(str(staging)).map_batches(
        _finalize_with_ref, batch_format="pyarrow", fn_kwargs={"keep_ref": keep_ref}
    )
    final.write_parquet(str(out / DATA_DIR), min_rows_per_file=1024)
    shutil.rmtree(staging, ignore_errors=True)

    quarantine = quarantine + decisions.quarantine
    counts = _split_counts(decisions.keep, out)
    _write_reports(out, quarantine, decisions.duplicates)
    summary = IngestSummary(
        str(out),
        len(found.tasks) + len(found.quarantine),
        len(decisions.keep),
        len(decisions.duplicates),
        len(quarantine),
        counts,
        time.time() - t0,
    )
    _write_dataset_json(out, src, found.layout, cfg, summary)
    return summary


def _finalize_with_ref(batch: pa.Table, keep_ref) -> pa.Table:
    import ray

    return finalize_batch(batch, ray.get(keep_ref))


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise IngestError(f"output {out} already exists and is not empty: choose another --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _filter_classes(tasks, quarantine, classes):
    if not classes:
        return tasks, list(quarantine)
    allowed = set(classes)
    kept = [t for t in tasks if t.label in allowed]
    dropped = [
        QuarantineEntry(t.source, f"label {t.label!r} not in --classes {sorted(allowed)}", t.label)
        for t in tasks
        if t.label not in allowed
    ]
    return kept, list(quarantine) + dropped


def _split_counts(keep: dict[str, str], out: Path) -> dict[str, dict[str, int]]:
    """Class counts per split, read back from the written Parquet (the truth, not the plan)."""
    from busgen.data.dataset import read_table

    table = read_table(out, columns=[S.LABEL, S.SPLIT])
    counts: dict[str, Counter] = defaultdict(Counter)
    for label, split in zip(table.column(S.LABEL).to_pylist(), table.column(S.SPLIT).to_pylist()):
        counts[split][label] += 1
    if sum(sum(c.values()) for c in counts.values()) != len(keep):
        raise IngestError(
            f"written rows ({table.num_rows}) differ from planned rows ({len(keep)}); re-run with --overwrite"
        )
    return {split: dict(sorted(c.items())) for split, c in sorted(counts.items())}


def _write_reports(out: Path, quarantine: list[QuarantineEntry], duplicates: list[dict]) -> None:
    with open(out / S.QUARANTINE_CSV, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["source", "reason", "label"])
        w.writeheader()
        w.writerows(asdict(q) for q in sorted(quarantine, key=lambda q: q.source))
    with open(out / "duplicates.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["source", "duplicate_of", "label"])
        w.writeheader()
        w.writerows(duplicates)


def _write_dataset_json(out: Path, src: Path, layout: str, cfg: IngestConfig, summary: IngestSummary) -> None:
    classes = sorted({c for split in summary.counts.values() for c in split})
    info = {
        "schema_version": S.SCHEMA_VERSION,
        "kind": "ingested",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(src.resolve()),
        "source_name": src.stem if src.is_file() else src.name,
        "layout": layout,
        "image_size": cfg.size,
        "resize_mode": cfg.resize_mode,
        "classes": classes,
        "counts": summary.counts,
        "n_images": summary.n_ingested,
        "n_discovered_files": summary.n_discovered,
        "n_duplicates": summary.n_duplicates,
        "n_quarantined": summary.n_quarantined,
        "split_seed": cfg.seed,
    }
    (out / S.DATASET_JSON).write_text(json.dumps(info, indent=2))
