"""``s3://``-style outputs: generate and ingest to a non-local pyarrow filesystem give the rows of a local run,
and no file is ever written under its final name (temporary key first, then a move; the marker file last).

The stand-in store is fsspec's in-memory filesystem under its own scheme, reached through
``pyarrow.fs.PyFileSystem(FSSpecHandler(...))`` exactly as adlfs or gcsfs would be; it records
every write and move so the test can check the publish protocol, not just the end state.
"""

import uuid

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from helpers.models import export_untrained_tiny
from helpers.remote import RecordingStore

from busgen.commands.data import IngestRun, run_ingest
from busgen.commands.generate import run_generate
from busgen.core import storage
from busgen.data import schema as S
from busgen.data.dataset import read_table
from busgen.data.phantom import write_phantom
from busgen.generate.resume import GenerateJobConfig


def remote_table(uri: str, columns):
    filesystem, path = storage.filesystem(uri)
    files = [
        f.path for f in filesystem.get_file_info(pafs.FileSelector(path, recursive=True)) if f.path.endswith(".parquet")
    ]
    return pq.ParquetDataset(files, filesystem=filesystem).read(columns=columns)


def assert_only_temporary_keys_were_written(root: str, marker: str):
    writes = [w for w in RecordingStore.writes if w.startswith(root)]
    assert writes, "the store saw the output"
    for key in writes:
        assert key.rsplit("/", 1)[1].startswith(".") and key.endswith(".tmp"), f"{key} written under a final name"
    finals = [dst for _, dst in RecordingStore.moves if dst.startswith(root)]
    assert finals[-1].endswith("/" + marker), "the marker file is published last"
    assert all(src.endswith(".tmp") for src, dst in RecordingStore.moves if dst.startswith(root))


@pytest.mark.slow  # two generation runs
def test_generate_to_a_uri_gives_the_rows_of_a_local_run(ray_local, tmp_path):
    model = export_untrained_tiny(tmp_path / "tiny")
    common = dict(model=str(model), n=20, shard_size=8, seed=3, sampler="ddim", steps=2, batch_size=8)
    local = run_generate(GenerateJobConfig(out=str(tmp_path / "local"), **common))
    uri = f"busgentest://bucket/{uuid.uuid4().hex}/synthetic"
    job = GenerateJobConfig(out=uri, stage_dir=str(tmp_path / "staging"), **common)
    result = run_generate(job)
    assert result["images"] == local["images"] == 20 and result["published"] == 4  # 3 shards + manifest.json
    cols = [S.INDEX, S.LABEL, S.IMAGE]
    ours = remote_table(uri, cols).sort_by(S.INDEX)
    assert ours.equals(read_table(tmp_path / "local", cols).sort_by(S.INDEX))
    root = uri.split("://", 1)[1]
    assert_only_temporary_keys_were_written(root, "manifest.json")
    filesystem, path = storage.filesystem(uri)
    names = sorted(f.base_name for f in filesystem.get_file_info(pafs.FileSelector(path)))
    assert names[0] == "manifest.json" and len(names) == 4 and all(n.startswith("shard-") for n in names[1:])
    again = run_generate(job)  # a re-run resumes in the staging folder and re-publishes nothing new
    assert again["generated"] == 0 and again["images"] == 20


def test_ingest_to_a_uri_gives_the_rows_of_a_local_run(ray_local, tmp_path):
    src = write_phantom(tmp_path / "src", 12, 48, seed=0)
    run_ingest(IngestRun(src=str(src), out=str(tmp_path / "local"), size=32))
    uri = f"busgentest://bucket/{uuid.uuid4().hex}/ds"
    run_ingest(IngestRun(src=str(src), out=uri, size=32, stage_dir=str(tmp_path / "staging")))
    cols = [S.SHA256, S.LABEL, S.SPLIT]
    assert remote_table(uri, cols).sort_by(S.SHA256).equals(read_table(tmp_path / "local", cols).sort_by(S.SHA256))
    assert_only_temporary_keys_were_written(uri.split("://", 1)[1], "dataset.json")
    with pytest.raises(Exception, match="already exists and is not empty"):
        run_ingest(IngestRun(src=str(src), out=uri, size=32, stage_dir=str(tmp_path / "staging")))
