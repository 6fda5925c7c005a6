"""Outputs at ``s3://``/``gs://``-style URIs: stage on local disk, then publish file by file, atomically.

Generation and ingest rely on POSIX semantics (a lock file, rename-into-place, footer scans
on resume), which object stores do not offer. So an output URI is produced in two steps:

1. the stage writes to a local *staging* folder (``staging_dir``: one per URI, so a re-run
   resumes there exactly as it would for a local ``--out``);
2. ``publish`` copies every file to a hidden temporary key next to its final name, then
   moves it to the final name, and writes the *marker* file (``manifest.json``,
   ``dataset.json``) last, so a reader that sees the marker sees every file.

Atomicity per file: on the local filesystem the move is a rename; on S3/GCS pyarrow's move
is a server-side copy, and an object appears whole or not at all (a PUT or copy is never
visible half-done), so no partial file ever sits under a final name. The temporary key can
outlive a crash; the next publish overwrites it. Files already published with the same
size are skipped, so a re-publish after a crash is cheap.

Filesystems: pyarrow's own (``s3://``, ``gs://``, ``hdfs://``, ``file://``); for any other
scheme an fsspec implementation (``az://`` via adlfs, ``memory://``...) wrapped in
``pyarrow.fs.PyFileSystem(FSSpecHandler(...))``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from busgen.core.storage import filesystem, is_uri

STAGING_ENV = "BUSGEN_STAGING"  # root of staging folders; default ~/busgen_runs/staging


def staging_dir(uri: str, root: str | None = None) -> Path:
    """The local folder a URI's output is produced in before publishing: stable per URI (re-runs resume there)."""
    base = Path(root or os.environ.get(STAGING_ENV) or "~/busgen_runs/staging").expanduser().resolve()
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "out"
    return base / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def local_dir(location: str, stage_root: str | None = None) -> str:
    """Where a stage writes: the location itself when local, its staging folder when a URI."""
    return str(staging_dir(location, stage_root)) if is_uri(location) else location


def has_entries(uri: str) -> bool:
    """True when the URI names a folder that exists and holds something."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    if filesystem_.get_file_info(path).type != fs.FileType.Directory:
        return False
    return bool(filesystem_.get_file_info(fs.FileSelector(path, recursive=False)))


def clear(uri: str) -> None:
    """Delete everything under the URI (``--overwrite`` of a remote output)."""
    filesystem_, path = filesystem(uri)
    filesystem_.delete_dir_contents(path, missing_dir_ok=True)


def publish(local: str | Path, uri: str, marker: str | None = None, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy the files under ``local`` to ``uri`` (temporary key, then move), ``marker`` last; returns the keys.

    ``skip`` names top-level entries that stay local (a tracking store); hidden files (lock files,
    temporary files of the stage) always stay local.
    """
    from pyarrow import fs

    local = Path(local)
    filesystem_, root = filesystem(uri)
    root = root.rstrip("/")
    files = sorted(
        p
        for p in local.rglob("*")
        if p.is_file()
        and p.relative_to(local).parts[0] not in skip
        and not any(part.startswith(".") for part in p.relative_to(local).parts)
        and p.name != marker
    )
    if marker and (local / marker).is_file():
        files.append(local / marker)
    published = []
    for fp in files:
        rel = fp.relative_to(local).as_posix()
        final = f"{root}/{rel}"
        info = filesystem_.get_file_info(final)
        if fp.name != marker and info.type == fs.FileType.File and info.size == fp.stat().st_size:
            published.append(final)
            continue  # already published by an earlier, interrupted publish
        parent, name = final.rsplit("/", 1)
        filesystem_.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        with open(fp, "rb") as src, filesystem_.open_output_stream(tmp) as dst:
            for chunk in iter(lambda: src.read(8 << 20), b""):
                dst.write(chunk)
        filesystem_.move(tmp, final)  # rename locally; server-side copy on object stores: never half visible
        published.append(final)
    return published
