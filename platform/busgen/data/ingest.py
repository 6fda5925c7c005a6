"""Ingest BUS datasets into the platform's Parquet layout with Ray Data.

The job runs in three passes so that image bytes never collect in the driver:

1. discover (driver, file names only; see ``busgen.data.sources`` and the read
   policy in ``busgen.data.paths``);
2. decode + resize + hash every image in Ray Data tasks (``busgen.data.ingest_file``),
   written to a staging Parquet folder (bad files become rows with an ``error``
   instead of crashing);
3. the driver reads only the small columns (hashes, labels, errors) to decide
   duplicates, label conflicts and splits (``busgen.data.ingest_decide``), and a
   second Ray Data pass writes the final rows.

Nothing silently disappears: every discovered entry ends up ingested, in
``duplicates.csv`` (the same file listed again, or an exact pixel duplicate of a
kept image with the same label), or in ``quarantine.csv`` with a reason, and the
run checks that these add up. Limits and the threat model: docs/security.md.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from busgen.core.csvcells import safe_row
from busgen.core.types import ResizeMode
from busgen.data import licences
from busgen.data import schema as S
from busgen.data.dicom import MAX_DECODED_BYTES
from busgen.data.imageio import MAX_PIXELS
from busgen.data.ingest_decide import decide, finalize_batch
from busgen.data.ingest_file import ERROR, ERROR_TYPE, PIXEL_SHA, UID, FileLimits, process_batch, read_any_image
from busgen.data.paths import Redactor
from busgen.data.sources import QuarantineEntry, SourceError, discover

__all__ = ["IngestConfig", "IngestError", "IngestSummary", "ingest", "read_any_image"]

STAGING_DIR = "_staging"
DATA_DIR = "data"
REDACTED = "<redacted>"


class IngestConfig(BaseModel):
    """Options of one ingest run (each field is also a CLI option: ``allow_roots`` -> ``--allow-roots``)."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(128, ge=8, description="side of the stored square images, pixels")
    resize_mode: ResizeMode = Field(
        "pad", description="pad: keep aspect, zero-pad the short side | crop: centre-crop | stretch"
    )
    domain: str | None = Field(
        None, description="device/site id for every row; default: a 'domain' manifest column, else the source name"
    )
    classes: list[str] | None = Field(None, description="allowed labels; others go to quarantine")
    seed: int = Field(0, description="seed of the stratified split when the source gives none")
    license: str | None = Field(
        None, description="licence of the source (e.g. cc-by-4.0); default: read from its README.md"
    )
    citation: str | None = Field(None, description="how to cite the source; default: read from its README.md")
    overwrite: bool = Field(False, description="replace an existing output dataset")
    allow_roots: list[str] = Field(
        [], description="folders outside the manifest's folder that manifest paths may point into"
    )
    redact_paths: bool | None = Field(
        None, description="store salted hashes instead of file paths; None: on if the source has DICOM"
    )
    max_pixels: int = Field(
        MAX_PIXELS, ge=1, description="largest image or DICOM frame (width x height), checked before decoding"
    )
    max_file_mb: float = Field(512, gt=0, description="larger files are quarantined unread")
    max_decoded_mb: float = Field(
        MAX_DECODED_BYTES / 2**20, gt=0, description="DICOM: all frames as stored, and Deflate output"
    )

    @field_validator("domain")
    @classmethod
    def _safe_domain(cls, domain: str | None) -> str | None:
        """Domains are names like labels (they reach folder names, reports and the playground's pages)."""
        if domain is not None and not S.is_safe_label(domain):
            raise ValueError(
                f"domain {domain[:80]!r} must match {S.SAFE_LABEL_RE.pattern} (letters, digits, _ . -): rename it"
            )
        return domain

    def limits(self) -> FileLimits:
        return FileLimits(self.max_pixels, int(self.max_file_mb * 2**20), int(self.max_decoded_mb * 2**20))


@dataclass
class IngestSummary:
    out_dir: str
    n_discovered: int  # entries seen (files, or manifest rows plus unlisted files); = the three counts below
    n_ingested: int
    n_duplicates: int
    n_quarantined: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    redacted: bool = False  # sources in the outputs are salted hashes

    def line(self) -> str:
        return (
            f"ingested {self.n_ingested} images, dropped {self.n_duplicates} duplicates (see duplicates.csv), "
            f"quarantined {self.n_quarantined} (see quarantine.csv) -> {self.out_dir} in {self.seconds:.1f}s"
        )


class IngestError(RuntimeError):
    """The ingest cannot start or finish (bad source, existing output)."""


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
        found = discover(src, cfg.allow_roots)
    except SourceError as exc:
        raise IngestError(str(exc)) from None
    _prepare_out(out, cfg.overwrite)
    tasks, quarantine = _filter_classes(found.tasks, found.quarantine, cfg.classes)
    redact = Redactor(found.maybe_dicom if cfg.redact_paths is None else cfg.redact_paths)
    src_name = src.stem if src.is_file() else src.name
    # The source folder's own name may be a patient's: with redaction, unnamed domains are "unknown".
    default_domain = cfg.domain or (S.UNKNOWN_DOMAIN if redact.enabled else src_name)
    if not S.is_safe_label(default_domain):  # a folder named "my data" or worse: domains must be safe names
        default_domain = S.UNKNOWN_DOMAIN
    init_ray()
    quiet_ray_data_progress(progress)

    # 1. decode/resize/hash in parallel tasks -> staging Parquet (public source ids only)
    staging = out / STAGING_DIR
    items = [
        {
            UID: uid,
            "path": t.path,
            "source": redact(t.source),
            "label": t.label,
            "mask_paths": t.mask_paths,
            "split": t.split,
            "domain": cfg.domain or t.domain,
        }
        for uid, t in enumerate(tasks)
    ]
    order = {uid: t.source for uid, t in enumerate(tasks)}  # plain paths stay in driver memory
    n_blocks = max(1, min(len(items) // 64, 200))
    ds = ray.data.from_items(items, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        process_batch,
        batch_format="pyarrow",
        batch_size=64,
        fn_kwargs={
            "size": cfg.size,
            "resize_mode": cfg.resize_mode,
            "default_domain": default_domain,
            "limits": cfg.limits(),
            "redact": redact.enabled,
        },
    )
    ds.write_parquet(str(staging))
    del items

    # 2. decide from small columns only
    meta = pq.read_table(staging, columns=[UID, S.SOURCE, S.LABEL, S.SPLIT, PIXEL_SHA, ERROR, ERROR_TYPE])
    decisions = decide(meta, cfg.seed, order)
    del meta

    # 3. final rows
    keep_ref = ray.put(decisions.keep)
    final = ray.data.read_parquet(str(staging)).map_batches(
        _finalize_with_ref, batch_format="pyarrow", fn_kwargs={"keep_ref": keep_ref}
    )
    final.write_parquet(str(out / DATA_DIR), min_rows_per_file=1024)
    shutil.rmtree(staging, ignore_errors=True)

    quarantine = [_redacted(q, redact) for q in quarantine] + decisions.quarantine
    duplicates = [_redacted(d, redact) for d in found.duplicates] + decisions.duplicates
    summary = IngestSummary(
        str(out),
        found.n_entries,
        len(decisions.keep),
        len(duplicates),
        len(quarantine),
        _split_counts(decisions.keep, out),
        time.time() - t0,
        redact.enabled,
    )
    _check_accounting(summary)
    _write_reports(out, quarantine, duplicates)
    _write_dataset_json(out, src, found.layout, cfg, summary)
    return summary


def _redacted(entry, redact: Redactor):
    """A discovery-time quarantine or duplicate entry with its paths redacted, in its reason too."""
    original = [entry.source, getattr(entry, "duplicate_of", "")]
    entry.source = redact(entry.source)
    if hasattr(entry, "duplicate_of"):
        entry.duplicate_of = redact(entry.duplicate_of)
    if hasattr(entry, "reason"):
        entry.reason = redact.scrub(entry.reason, *original)
    return entry


def _check_accounting(s: IngestSummary) -> None:
    """Every entry must be ingested, a duplicate or quarantined: a gap is a bug, never silent loss."""
    if s.n_ingested + s.n_duplicates + s.n_quarantined != s.n_discovered:
        raise IngestError(
            f"accounting error: {s.n_discovered} entries discovered but {s.n_ingested} ingested + "
            f"{s.n_duplicates} duplicates + {s.n_quarantined} quarantined; please report this with the source layout"
        )


def _finalize_with_ref(batch, keep_ref):
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


def _split_counts(keep: dict[int, str], out: Path) -> dict[str, dict[str, int]]:
    """Class counts per split, read back from the written Parquet (the truth, not the plan)."""
    from busgen.data.dataset import read_table

    table = read_table(out, columns=[S.LABEL, S.SPLIT])
    counts: dict[str, Counter] = defaultdict(Counter)
    for label, split in zip(table.column(S.LABEL).to_pylist(), table.column(S.SPLIT).to_pylist()):
        counts[split][label] += 1
    if table.num_rows != len(keep):
        raise IngestError(
            f"written rows ({table.num_rows}) differ from planned rows ({len(keep)}); re-run with --overwrite"
        )
    return {split: dict(sorted(c.items())) for split, c in sorted(counts.items())}


def _write_reports(out: Path, quarantine: list[QuarantineEntry], duplicates: list) -> None:
    """quarantine.csv and duplicates.csv, every cell escaped (formulas, invalid UTF-8; see ``core.csvcells``)."""
    with open(out / S.QUARANTINE_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(S.QUARANTINE_COLUMNS))
        w.writeheader()
        w.writerows(safe_row(asdict(q)) for q in sorted(quarantine, key=lambda q: q.source))
    with open(out / S.DUPLICATES_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(S.DUPLICATE_COLUMNS))
        w.writeheader()
        w.writerows(safe_row(asdict(d)) for d in duplicates)


def _write_dataset_json(out: Path, src: Path, layout: str, cfg: IngestConfig, summary: IngestSummary) -> None:
    classes = sorted({c for split in summary.counts.values() for c in split})
    src_name = src.stem if src.is_file() else src.name
    info = {
        "schema_version": S.SCHEMA_VERSION,
        "kind": "ingested",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": REDACTED if summary.redacted else str(src.resolve()),
        "source_name": REDACTED if summary.redacted else src_name,
        "paths_redacted": summary.redacted,
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
        # licence and citation travel into every model trained on this set (busgen.data.licences, model card)
        "datasets": [
            licences.dataset_record(
                REDACTED if summary.redacted else src_name,
                src if src.is_dir() else src.parent,
                cfg.license,
                cfg.citation,
            )
        ],
        "limits": {"max_pixels": cfg.max_pixels, "max_file_mb": cfg.max_file_mb, "max_decoded_mb": cfg.max_decoded_mb},
    }
    (out / S.DATASET_JSON).write_text(json.dumps(info, indent=2))
