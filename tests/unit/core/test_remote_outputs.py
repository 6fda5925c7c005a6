"""``s3://``-style outputs: generate and ingest to a non-local pyarrow filesystem give the rows of a local run,
and no file is ever written under its final name (temporary key first, then a move; the marker file last).

The stand-in store is fsspec's in-memory filesystem under its own scheme, reached through
``pyarrow.fs.PyFileSystem(FSSpecHandler(...))`` exactly as adlfs or gcsfs would be; it records
every write and move so the test can check the publish protocol, not just the end state.
"""

import uuid

import pyarrow.parquet as pq
import pytest
from helpers.remote import RecordingStore

from busgen.core import storage


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
