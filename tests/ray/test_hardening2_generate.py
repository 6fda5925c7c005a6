"""Generation shards that lie: damaged data pages under a whole footer, stray shards off the tiling, bad ratios.

A resumed run must count a shard as done only when its data reads back and matches its
name, move every other Parquet file a reader would see to ``_quarantine/`` with a reason,
and regenerate exactly the missing indices, so re-running always converges to exactly N
unique indices with byte-identical rows.
"""

from __future__ import annotations

import json
import math
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.data import images_by_index

from busgen.data import schema as S
from busgen.data.dataset import read_table
from busgen.generate import store
from busgen.generate.resume import check_output
from busgen.generate.shards import GenerateConfig, GenerateError, GenerateWarning, generate, validate

FAST = dict(sampler="ddim", steps=2, batch_size=8)
N, SHARD = 12, 4


def damage_data_pages(fp, column: str = S.IMAGE) -> None:
    """Flip bytes in the middle of ``column``'s first data page; the footer stays intact and readable."""
    meta = pq.ParquetFile(fp).metadata
    chunk = meta.row_group(0).column(meta.schema.names.index(column))
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data = bytearray(fp.read_bytes())
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    fp.write_bytes(bytes(data))
    assert pq.ParquetFile(fp).metadata.num_rows == meta.num_rows, "footer still promises every row"


def write_stray_shard(out, start: int, end: int) -> None:
    """A well-formed shard of the same run's rows, but on a range off the tiling (what a run with
    another shard_size, or a copy from another folder, leaves behind)."""
    table = read_table(out).sort_by(S.INDEX)
    rows = table.filter(
        pa.compute.and_(pa.compute.greater_equal(table[S.INDEX], start), pa.compute.less(table[S.INDEX], end))
    )
    pq.write_table(rows, store.shard_path(out, start, end), write_page_checksum=True)


@pytest.fixture
def generated(ray_local, model_dir, tmp_path):
    cfg = GenerateConfig(model=str(model_dir), out=str(tmp_path / "g"), n=N, shard_size=SHARD, seed=5, **FAST)
    generate(cfg, progress=False)
    return cfg, images_by_index(cfg.out)


def test_damaged_pages_and_a_stray_shard_are_quarantined_and_a_rerun_converges_to_exactly_n(generated):
    cfg, before = generated
    out = store.shard_path(cfg.out, 0, SHARD).parent
    damaged = store.shard_path(out, 0, SHARD)
    write_stray_shard(out, 2, 6)
    damage_data_pages(damaged)

    with pytest.warns(GenerateWarning) as caught:
        summary = generate(cfg, progress=False)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"{damaged}: damaged data pages") for m in messages), messages
    assert any("off the expected tiling" in m and "shard-000000002-000000006" in m for m in messages), messages
    assert (summary.generated, summary.skipped) == (SHARD, N - SHARD), "exactly the damaged range is regenerated"

    indices = read_table(out, [S.INDEX]).column(S.INDEX).to_pylist()
    assert sorted(indices) == list(range(N)), "exactly N unique indices"
    assert images_by_index(out) == before, "every row byte-identical to the first run"
    assert check_output(out, N, SHARD) == N
    reasons = [json.loads(line) for line in (out / "_quarantine" / "reasons.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in reasons) == [damaged.name, "shard-000000002-000000006.parquet"]
    assert all((out / "_quarantine" / r["moved_to"]).is_file() for r in reasons), "moved aside, not deleted"

    with warnings.catch_warnings():
        warnings.simplefilter("error", GenerateWarning)
        again = generate(cfg, progress=False)
    assert (again.generated, again.skipped) == (0, N), "a further re-run finds nothing to repair"


def test_a_shard_whose_rows_do_not_match_its_name_or_hashes_is_not_done(tmp_path):
    table = pa.table({S.INDEX: [0, 1, 2], S.IMAGE: [b"a", b"b", b"c"], S.SHA256: ["x", "y", "z"]})
    fp = store.shard_path(tmp_path, 0, 3)
    pq.write_table(table, fp, write_page_checksum=True)
    assert "do not match their sha256" in store.shard_problem(fp, 0, 3)
    import hashlib

    digests = [hashlib.sha256(b).hexdigest() for b in (b"a", b"b", b"c")]
    pq.write_table(table.set_column(2, S.SHA256, pa.array(digests)), fp, write_page_checksum=True)
    assert store.shard_problem(fp, 0, 3) is None
    pq.write_table(table.set_column(2, S.SHA256, pa.array(digests)), store.shard_path(tmp_path, 3, 6))
    assert "holds index 0, its name promises 3" in store.shard_problem(store.shard_path(tmp_path, 3, 6), 3, 6)


def test_check_output_names_a_stray_parquet_file(generated):
    cfg, _ = generated
    out = store.shard_path(cfg.out, 0, SHARD).parent
    write_stray_shard(out, 2, 6)
    with pytest.raises(GenerateError, match="shard-000000002-000000006.parquet.*off the expected tiling"):
        check_output(out, N, SHARD)


@pytest.mark.parametrize("weight", [math.nan, math.inf])
def test_class_ratio_must_be_finite_and_non_negative(model_dir, tmp_path, weight):
    cfg = GenerateConfig(
        model=str(model_dir), out=str(tmp_path / "g"), class_ratio={"benign": 1.0, "malignant": weight}
    )
    with pytest.raises(GenerateError, match="finite, non-negative"):
        validate(cfg)


def test_quarantined_shards_stay_local_when_a_uri_output_is_published(tmp_path):
    from busgen.generate.resume import GenerateJobConfig, publish_output

    job = GenerateJobConfig(model="m", out="memory://hardening2/gen", stage_dir=str(tmp_path / "stage"), n=4)
    local = store.shard_path(job.generate_config().out, 0, 4).parent
    local.mkdir(parents=True)
    for name in ("shard-000000000-000000004.parquet", "manifest.json", "_quarantine/shard-000000002-000000006.parquet"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(b"x")
    published = publish_output(job)
    assert sorted(p.rsplit("/", 1)[1] for p in published) == ["manifest.json", "shard-000000000-000000004.parquet"]
