"""The output folder on disk: durable shard files, their verification, and ``manifest.json``.

A shard is written to a hidden temporary file, fsynced, renamed into place, and the
folder fsynced: after a crash (power loss included) a shard name exists with its full
contents or not at all. Resume still trusts no name: a shard counts as done only when

* its Parquet footer reads and holds exactly the rows its name promises;
* its data pages read back with their CRC-32 page checksums verified (written since
  this check exists), its ``index`` column is exactly the range of its name, and every
  image's bytes hash to the ``sha256`` written beside them at generation time;
* its range belongs to the run's tiling of ``[0, n)`` into ``shard_size`` pieces.

Every other Parquet file a dataset reader would read (a damaged shard, a stray shard
off the tiling, any other ``*.parquet``) is moved to ``_quarantine/`` (readers skip
folders starting with ``_``) with its reason appended to ``_quarantine/reasons.jsonl``,
and the missing ranges are generated again. A re-run therefore always converges to
exactly ``n`` unique indices. The data check reads every shard once per resume
(about the bytes written); checks of a finished folder read footers only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import pyarrow.parquet as pq

from busgen.core.types import DEFAULT_PROTECT_MIN_FIT
from busgen.data import schema as S
from busgen.generate.config import GenerateConfig, GenerateError, GenerateWarning

MANIFEST = "manifest.json"
SHARD_FMT = "shard-{start:09d}-{end:09d}.parquet"
QUARANTINE_DIR = "_quarantine"  # shards that cannot count, kept for inspection; dataset readers skip "_" folders
QUARANTINE_LOG = "reasons.jsonl"
VERIFY_BATCH_ROWS = 256  # rows read at a time by the data check: memory stays one batch of PNGs


def shard_path(out: Path, start: int, end: int) -> Path:
    return Path(out) / SHARD_FMT.format(start=start, end=end)


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, final: Path) -> None:
    """Rename a fully written file into place so that both its bytes and its name survive a crash."""
    fsync_path(tmp)
    os.replace(tmp, final)  # atomic: the name appears with the full contents or not at all
    fsync_path(final.parent)


def shard_problem(fp: Path, start: int, end: int, verify_data: bool = True) -> str | None:
    """Why a shard file cannot count as done, or None when it is whole.

    Footer first (row count); with ``verify_data`` also every data page (CRC checked when
    the file has page checksums), the ``index`` column against the name's range, and each
    image against its ``sha256``.
    """
    try:
        rows = pq.ParquetFile(fp).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises several types for truncated or empty files
        return f"unreadable Parquet footer ({_first_line(exc)})"
    if rows != end - start:
        return f"holds {rows} rows, its name promises {end - start}"
    return _data_problem(fp, start, end) if verify_data else None


def _data_problem(fp: Path, start: int, end: int) -> str | None:
    expected = start
    try:
        pf = pq.ParquetFile(fp, page_checksum_verification=True)
        for batch in pf.iter_batches(VERIFY_BATCH_ROWS, columns=[S.INDEX, S.IMAGE, S.SHA256]):
            cols = batch.to_pydict()
            for index, image, digest in zip(cols[S.INDEX], cols[S.IMAGE], cols[S.SHA256]):
                if index != expected:
                    return f"row {expected - start} holds index {index}, its name promises {expected}"
                if image is None or hashlib.sha256(image).hexdigest() != digest:
                    return f"row {expected - start} (index {index}): image bytes do not match their sha256"
                expected += 1
    except Exception as exc:  # noqa: BLE001 -- damaged pages raise OSError, ArrowInvalid, decompression errors...
        return f"damaged data pages ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def shard_range(fp: Path) -> tuple[int, int] | None:
    """The (start, end) a shard's name promises, or None for a name this module does not write."""
    parts = fp.stem.split("-")
    if fp.suffix != ".parquet" or len(parts) != 3 or parts[0] != "shard":
        return None
    try:
        start, end = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    return (start, end) if 0 <= start < end and fp.name == SHARD_FMT.format(start=start, end=end) else None


def reader_parquet_files(out: Path) -> list[Path]:
    """Every Parquet file a dataset reader would read in ``out`` (same rule as ``data.dataset.parquet_files``)."""
    out = Path(out)
    return sorted(
        p for p in out.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in p.relative_to(out).parts)
    )


def scan_shards(
    out: Path, expected: set[tuple[int, int]] | None = None, verify_data: bool = True
) -> tuple[set[tuple[int, int]], list[tuple[Path, str]]]:
    """(ranges of whole shards, [(path, problem)] of every other Parquet file a reader would see).

    Args:
        expected: the run's tiling; a shard off it (or with an odd name) is a problem. None: any
            well-named shard counts (a folder whose settings are not known).
        verify_data: also read data pages and hashes (see ``shard_problem``); False reads footers only.
    """
    good, bad = set(), []
    for fp in reader_parquet_files(out):
        rng = shard_range(fp) if fp.parent == Path(out) else None
        if rng is None:
            bad.append((fp, "not a shard of this generation (unexpected Parquet file name or folder)"))
            continue
        if expected is not None and rng not in expected:
            bad.append((fp, f"range {rng[0]}-{rng[1]} is off the expected tiling of this run's n and shard_size"))
            continue
        problem = shard_problem(fp, *rng, verify_data=verify_data)
        if problem is None:
            good.add(rng)
        else:
            bad.append((fp, problem))
    return good, bad


def completed_shards(
    out: Path, expected: set[tuple[int, int]] | None = None, verify_data: bool = True
) -> set[tuple[int, int]]:
    """Ranges whose shard file exists and is whole (see ``scan_shards``)."""
    return scan_shards(out, expected, verify_data)[0]


def quarantine_shards(out: Path, expected: set[tuple[int, int]] | None = None) -> set[tuple[int, int]]:
    """Move every Parquet file that cannot count to ``_quarantine/`` (warning each) and return the ranges done."""
    good, bad = scan_shards(out, expected)
    for fp, problem in bad:
        moved = quarantine_file(Path(out), fp, problem)
        warnings.warn(f"{fp}: {problem}; it will be regenerated (moved to {moved})", GenerateWarning, stacklevel=2)
    return good


def quarantine_file(out: Path, fp: Path, reason: str) -> Path:
    """Move ``fp`` into ``out/_quarantine/`` under a free name and log why; returns its new path."""
    qdir = out / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    target = qdir / fp.name
    k = 1
    while target.exists():
        target = qdir / f"{fp.stem}.{k}{fp.suffix}"
        k += 1
    os.replace(fp, target)
    record = {"file": str(fp.relative_to(out)), "moved_to": target.name, "reason": reason, "at": time.time()}
    with open(qdir / QUARANTINE_LOG, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    fsync_path(out)
    return target


def write_manifest(out: Path, manifest: dict) -> None:
    tmp = Path(out) / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    durable_replace(tmp, Path(out) / MANIFEST)


def protect_record(cfg: GenerateConfig) -> dict:
    """Protected sets record the classifier's fit and the floor it passed (a lowered floor is visible here)."""
    if cfg.protect == "none":
        return {}
    from busgen.model.protect import read_protect_meta

    meta = read_protect_meta(cfg.model)
    return {
        "protection": {
            "protect_id": meta.get("protect_id"),
            "fit_accuracy": meta.get("fit_accuracy"),
            "min_fit_accuracy": cfg.protect_min_fit,
            "floor_lowered": cfg.protect_min_fit < DEFAULT_PROTECT_MIN_FIT,
        }
    }


def load_or_create_manifest(cfg: GenerateConfig, model_id: str) -> dict:
    """The folder's manifest; a new one for an empty folder. A different model or settings is refused."""
    out = Path(cfg.out)
    fp = out / MANIFEST
    settings = cfg.pixel_settings()
    if fp.is_file():
        try:
            manifest = json.loads(fp.read_text())
            old_settings, old_model = manifest["settings"], manifest["model_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise GenerateError(f"{fp} is damaged ({type(exc).__name__}: {exc}): choose a new --out") from None
        if old_settings != settings or old_model != model_id:
            changed = sorted(k for k in settings if old_settings.get(k) != settings[k])
            if old_model != model_id:
                changed.append("model")
            raise GenerateError(
                f"{out} holds a generation with different settings ({', '.join(changed)} changed): "
                "re-run with the original settings to resume, or choose a new --out"
            )
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("shard-*.parquet")):
        raise GenerateError(f"{out} holds shards but no {MANIFEST}: choose a new --out")
    manifest = {
        "schema_version": S.SCHEMA_VERSION,
        "kind": "synthetic",
        "model": str(Path(cfg.model).resolve()),
        "model_id": model_id,
        "settings": settings,
        **protect_record(cfg),
        "completed": [],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_manifest(out, manifest)
    return manifest


def track_generation(cfg: GenerateConfig, results: dict) -> str:
    """Record a finished generation in MLflow: settings, counts and throughput, ``manifest.json``; returns the link.

    The store is ``tracking.resolve_uri(cfg.tracking_uri)``, the one every command shares.
    """
    from busgen.core import tracking

    out = Path(cfg.out)
    return tracking.log_once(
        cfg.tracking,
        cfg.tracking_uri,
        "busgen-generate",
        out.name,
        cfg.model_dump(mode="json"),
        results,
        (out / MANIFEST,),
    )
