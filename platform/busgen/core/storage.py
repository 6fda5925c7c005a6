"""Locations every node agrees on: local paths made absolute, URIs left alone, small files written to either.

Jobs run inside a Ray runtime_env ``working_dir``, which is unpacked into a different
folder on every node, so a relative path means different things to the driver and to
workers. ``resolve_location`` therefore makes local paths absolute on the driver (pass
shared-filesystem paths on a real cluster) and leaves ``s3://``-style URIs alone;
``write_json`` and ``write_table`` reach either through pyarrow filesystems.
"""

from __future__ import annotations

import io
import json
from pathlib import Path


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` locations (object stores), False for local paths."""
    return "://" in location


def resolve_location(location: str) -> str:
    """Absolute local path, or the URI unchanged: every node must read the same thing the driver means."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for a URI: pyarrow's native filesystems first, then fsspec's.

    Raises:
        ValueError: the scheme is known to neither pyarrow nor fsspec.
    """
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as native_error:  # pyarrow: "Unrecognized filesystem type in URI"
        try:
            import fsspec
            from fsspec.core import url_to_fs
        except ImportError:
            raise ValueError(f"error: cannot open {uri} ({native_error}): install fsspec for this scheme") from None
        scheme = uri.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(scheme)  # known or registered implementation (imports its package)
        except (ValueError, ImportError):
            raise ValueError(
                f"error: no filesystem for {scheme}:// in {uri}: use s3://, gs://, hdfs:// or a scheme fsspec knows"
            ) from None
        ffs, path = url_to_fs(uri)
        return fs.PyFileSystem(fs.FSSpecHandler(ffs)), path


def _filesystem(location: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI such as ``s3://bucket/key``."""
    from pyarrow import fs

    if is_uri(location):
        return filesystem(location)
    return fs.LocalFileSystem(), resolve_location(location)


def write_bytes(location: str, data: bytes) -> None:
    """Write a small file to a local path or URI, creating parent folders where the filesystem has them."""
    filesystem, path = _filesystem(location)
    parent = path.rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(data)


def write_json(location: str, record: dict) -> None:
    """Write ``record`` as indented JSON (non-JSON values via ``str``)."""
    write_bytes(location, json.dumps(record, indent=2, default=str).encode())


def write_tables(stem: str, rows: list[dict]) -> tuple[str, str]:
    """``<stem>.parquet`` and ``<stem>.csv`` from flat dicts (columns: the union of their keys, in order).

    Sweeps on clusters write their tables to object storage, suites to a local report
    folder; both go through here so the two files always agree, except that CSV text
    cells that a spreadsheet would run as a formula are escaped (``core.csvcells``).

    Returns:
        (parquet location, csv location)
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    stem = resolve_location(stem)
    columns = list(dict.fromkeys(k for row in rows for k in row))  # a failed trial's row lacks its metrics
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
    written = []
    for suffix, writer in ((".parquet", pq.write_table), (".csv", pacsv.write_csv)):
        buf = io.BytesIO()
        writer(table if suffix == ".parquet" else _csv_safe(table), buf)
        write_bytes(stem + suffix, buf.getvalue())
        written.append(stem + suffix)
    return written[0], written[1]


def _csv_safe(table):
    """``table`` with every text cell passed through ``csvcells.safe_cell`` (numbers stay numbers)."""
    import pyarrow as pa

    from busgen.core.csvcells import safe_cell

    for i, column in enumerate(table.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            cells = pa.array([safe_cell(v) for v in column.to_pylist()], type=column.type)
            table = table.set_column(i, table.field(i), cells)
    return table
