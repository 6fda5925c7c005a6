"""The output folder on disk: durable shard files, their verification, and ``manifest.json``.

A shard is written to a hidden temporary file, fsynced, renamed into place, and the
folder fsynced: after a crash (power loss included) a shard name exists with its full
contents or not at all. Resume still trusts no name: a shard counts as done only when
its Parquet footer reads and holds exactly the rows its name promises (footers only,
so this stays cheap for millions of rows); anything else is regenerated.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pyarrow.parquet as pq

from busgen.data import schema as S
from busgen.generate.config import GenerateConfig, GenerateError, GenerateWarning

MANIFEST = "manifest.json"
SHARD_FMT = "shard-{start:09d}-{end:09d}.parquet"


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


def shard_problem(fp: Path, start: int, end: int) -> str | None:
    """Why a shard file cannot count as done (unreadable footer, wrong row count), or None when it is whole."""
    try:
        rows = pq.ParquetFile(fp).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises several types for truncated or empty files
        return f"unreadable Parquet footer ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if rows != end - start:
        return f"holds {rows} rows, its name promises {end - start}"
    return None


def scan_shards(out: Path) -> tuple[set[tuple[int, int]], list[tuple[Path, str]]]:
    """(ranges of whole shards, [(path, problem)] of shard files that are not whole)."""
    good, bad = set(), []
    for fp in sorted(Path(out).glob("shard-*-*.parquet")):
        try:
            _, start, end = fp.stem.split("-")
            start, end = int(start), int(end)
        except ValueError:
            continue  # not a name this module writes
        problem = shard_problem(fp, start, end)
        if problem is None:
            good.add((start, end))
        else:
            bad.append((fp, problem))
    return good, bad


def completed_shards(out: Path) -> set[tuple[int, int]]:
    """Ranges whose shard file exists and holds exactly the rows its name promises (checked in the footer)."""
    return scan_shards(out)[0]


def drop_damaged_shards(out: Path) -> set[tuple[int, int]]:
    """Delete shard files that are not whole (with a warning each) and return the ranges that are done."""
    good, bad = scan_shards(out)
    for fp, problem in bad:
        warnings.warn(f"{fp}: {problem}; it will be regenerated", GenerateWarning, stacklevel=2)
        fp.unlink()
    return good


def write_manifest(out: Path, manifest: dict) -> None:
    tmp = Path(out) / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    durable_replace(tmp, Path(out) / MANIFEST)


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
        "completed": [],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_manifest(out, manifest)
    return manifest


def track_generation(cfg: GenerateConfig, results: dict) -> str:
    """Record a finished generation in MLflow: settings, counts and throughput, ``manifest.json``; returns the link.

    The default local store is ``<out>/mlruns`` (data readers skip it: it holds no Parquet).
    """
    from busgen.core import tracking

    out = Path(cfg.out)
    return tracking.log_once(
        cfg.tracking,
        cfg.tracking_uri,
        out,
        "busgen-generate",
        out.name,
        cfg.model_dump(mode="json"),
        results,
        (out / MANIFEST,),
    )
