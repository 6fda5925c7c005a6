"""``s3://``-style outputs: generate and ingest to a non-local pyarrow filesystem give the rows of a local run,
and no file is ever written under its final name (temporary key first, then a move; the marker file last).

The stand-in store is fsspec's in-memory filesystem under its own scheme, reached through
``pyarrow.fs.PyFileSystem(FSSpecHandler(...))`` exactly as adlfs or gcsfs would be; it records
every write and move so the test can check the publish protocol, not just the end state.
"""

import uuid

import pyarrow.parquet as pq
import pytest
from fsspec import register_implementation
from fsspec.implementations.memory import MemoryFileSystem

from busgen.core import storage


class RecordingStore(MemoryFileSystem):
    """In-memory object store that logs the names it writes and the moves it makes."""

    protocol = "busgentest"
    store: dict = {}  # its own keys, apart from fsspec's shared memory:// store
    pseudo_dirs = [""]
    writes: list[str] = []
    moves: list[tuple[str, str]] = []

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(path.removeprefix("busgentest://"))

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            self.writes.append(self._strip_protocol(path).lstrip("/"))
        return super()._open(path, mode, **kwargs)

    def mv(self, path1, path2, **kwargs):
        self.moves.append((self._strip_protocol(path1).lstrip("/"), self._strip_protocol(path2).lstrip("/")))
        return super().mv(path1, path2, **kwargs)


register_implementation("busgentest", RecordingStore, clobber=True)


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="no filesystem for nosuch://"):
        storage.filesystem("nosuch://bucket/x")


def test_results_files_reach_the_same_remote_schemes_as_outputs():
    """Job results JSON and sweep tables go through the one URI resolver, fsspec schemes included."""
    root = f"busgentest://results-{uuid.uuid4().hex[:8]}"
    storage.write_json(f"{root}/run.json", {"status": "ok"})
    parquet, _ = storage.write_tables(f"{root}/table", [{"a": 1}, {"a": 2}])
    filesystem, path = storage.filesystem(parquet)
    with filesystem.open_input_file(path) as fh:
        assert pq.read_table(fh).column("a").to_pylist() == [1, 2]
    assert f"results-{root.split('-')[-1]}/run.json" in " ".join(RecordingStore.writes)
