"""Result tables and locations: rows written as Parquet and CSV to a local folder or an ``s3://``-style URI.

Sweeps run on clusters write their tables to object storage, suites to a local report
folder; both go through ``write_tables`` so the two files always agree.
"""

from __future__ import annotations

from pathlib import Path


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_location(location: str) -> str:
    """Absolute local path, or the URI unchanged: Tune trials run in other folders and on other nodes."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def write_bytes(location: str, data: bytes) -> None:
    """Write a file to a local path or URI, creating parent folders where the filesystem has them."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(location) if is_uri(location) else (fs.LocalFileSystem(), location)
    parent = path.rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(data)


def write_tables(stem: str, rows: list[dict]) -> tuple[str, str]:
    """``<stem>.parquet`` and ``<stem>.csv`` from flat dicts (columns: the union of their keys, in order).

    Returns:
        (parquet location, csv location)
    """
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    stem = resolve_location(stem)
    columns = list(dict.fromkeys(k for row in rows for k in row))  # a failed trial's row lacks its metrics
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
    written = []
    for suffix, writer in ((".parquet", pq.write_table), (".csv", pacsv.write_csv)):
        buf = io.BytesIO()
        writer(table, buf)
        write_bytes(stem + suffix, buf.getvalue())
        written.append(stem + suffix)
    return written[0], written[1]
