"""Generation hardening: durable shards, verified resume, one run per output folder, clear input errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from busgen.data import schema as S
from busgen.generate import store
from busgen.generate.shards import LOCK_FILE, GenerateConfig, GenerateError, generate, validate

FAST = dict(sampler="ddim", steps=2, batch_size=8)


def write_lock(out, pid: int, host: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host, "started_at": "then", "token": "x"}))


def test_shard_rename_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    """Without both fsyncs a crash can leave a shard name whose bytes never reached the disk."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_fsync(fd)))
    tmp = tmp_path / ".shard.tmp"
    tmp.write_bytes(b"rows")
    inode = tmp.stat().st_ino
    store.durable_replace(tmp, tmp_path / "shard-000000000-000000001.parquet")
    assert inode in synced and tmp_path.stat().st_ino in synced
    assert synced.index(inode) < synced.index(tmp_path.stat().st_ino), "file before the folder entry"


def test_lock_from_another_host_is_refused_with_how_to_clear_it(model_dir, tmp_path):
    write_lock(tmp_path / "remote", 1, "some-other-node")
    cfg = GenerateConfig(model=str(model_dir), out=str(tmp_path / "remote"), n=4, shard_size=4, **FAST)
    with pytest.raises(GenerateError, match=r"pid 1 on host some-other-node.*if that run is gone, delete"):
        generate(cfg, progress=False)


@pytest.mark.parametrize(
    "csv_text, match",
    [
        ("left,top,right,bottom\n0.1,0.1,0.5,0.5\n", r"has no column x0, y0, x1, y1 \(header: left,top,right,bottom\)"),
        ("x0,y0,x1\n0.1,0.1,0.5\n", r"has no column y1"),
        ("x0,y0,x1,y1\n0.1,0.1,0.5,0.5\n0.2,a,0.6,0.6\n", r"line 3: 0.2,a,0.6,0.6 are not four numbers"),
        ("x0,y0,x1,y1\n", r"has no rows"),
    ],
)
def test_bad_boxes_csv_is_a_clear_error_naming_the_file(model_dir, tmp_path, csv_text, match):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(csv_text)
    cfg = GenerateConfig(model=str(model_dir), out=str(tmp_path / "o"), n=4, boxes_file=str(boxes), **FAST)
    with pytest.raises(GenerateError, match=rf"boxes file {boxes} {match}.*header line names x0,y0,x1,y1"):
        validate(cfg)
    assert not (tmp_path / "o").exists()


def test_missing_boxes_file_is_a_clear_error(model_dir, tmp_path):
    cfg = GenerateConfig(model=str(model_dir), out=str(tmp_path / "o"), n=4, boxes_file=str(tmp_path / "no.csv"))
    with pytest.raises(GenerateError, match=r"no.csv cannot be read"):
        validate(cfg)


@pytest.mark.parametrize(
    "text, match", [("{not json", "is not valid JSON"), ('{"domain_names": []}', "lacks class_names")]
)
def test_model_with_a_broken_busgen_json_is_a_clear_error(tmp_path, text, match):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "busgen.json").write_text(text)
    cfg = GenerateConfig(model=str(tmp_path / "m"), out=str(tmp_path / "o"), n=4)
    with pytest.raises(GenerateError, match=rf"busgen.json {match}.*re-export the model"):
        validate(cfg)


def test_export_png_refuses_labels_that_are_not_folder_names(tmp_path):
    """A set from elsewhere labelled ``../../escaped`` must not make export write outside its folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from busgen.data.dataset import DatasetError
    from busgen.data.imageio import encode_png
    from busgen.generate.shards import export_png

    png = encode_png(np.zeros((8, 8), np.uint8))
    (tmp_path / "set").mkdir()
    table = pa.table({S.IMAGE: [png, png], S.LABEL: ["benign", "../../escaped"], S.SHA256: ["a" * 64, "b" * 64]})
    pq.write_table(table, tmp_path / "set" / "part-0.parquet")
    with pytest.raises(DatasetError, match="not safe folder names"):
        export_png(tmp_path / "set", tmp_path / "out" / "png")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()
