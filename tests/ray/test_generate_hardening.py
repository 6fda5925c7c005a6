"""Generation hardening: durable shards, verified resume, one run per output folder, clear input errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from helpers.data import images_by_index

from busgen.generate import store
from busgen.generate.shards import LOCK_FILE, GenerateConfig, GenerateError, GenerateWarning, generate

FAST = dict(sampler="ddim", steps=2, batch_size=8)


def write_lock(out, pid: int, host: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host, "started_at": "then", "token": "x"}))


@pytest.mark.slow  # two generation runs; tests/ray/test_hardening2_generate.py covers damaged shards in make test
def test_empty_or_truncated_shard_with_a_done_name_is_regenerated(ray_local, model_dir, tmp_path):
    cfg = GenerateConfig(model=str(model_dir), out=str(tmp_path / "g"), n=12, shard_size=4, seed=3, **FAST)
    generate(cfg, progress=False)
    before = images_by_index(cfg.out)
    first, second = store.shard_path(cfg.out, 0, 4), store.shard_path(cfg.out, 4, 8)
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated by a crash
    second.write_bytes(b"")  # renamed before its bytes were flushed
    assert store.completed_shards(cfg.out) == {(8, 12)}, "names alone do not make a shard done"
    with pytest.warns(GenerateWarning, match="regenerated") as caught:
        summary = generate(cfg, progress=False)
    assert {str(first), str(second)} <= {str(w.message).split(":")[0] for w in caught}
    assert (summary.generated, summary.skipped) == (8, 4)
    assert images_by_index(cfg.out) == before, "regenerated rows are byte-identical"
    assert json.loads((tmp_path / "g" / "manifest.json").read_text())["n_rows"] == 12


def test_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(ray_local, model_dir, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "stale"
    write_lock(out, dead.pid, socket.gethostname())
    cfg = GenerateConfig(model=str(model_dir), out=str(out), n=4, shard_size=4, **FAST)
    with pytest.warns(GenerateWarning, match=rf"taking over the lock .* \(pid {dead.pid} on this host\)"):
        summary = generate(cfg, progress=False)
    assert summary.generated == 4
    assert not (out / LOCK_FILE).exists(), "the lock is released when the run ends"


def test_check_output_names_a_damaged_shard_and_counts_whole_ones(ray_local, model_dir, tmp_path):
    from busgen.generate.resume import check_output

    out = tmp_path / "out"
    generate(GenerateConfig(model=str(model_dir), out=str(out), n=16, shard_size=8, **FAST), progress=False)
    assert check_output(out, 16, 8) == 16
    shard = sorted(out.glob("shard-*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[:50])  # truncated under its final name
    with pytest.raises(GenerateError, match=shard.name):
        check_output(out, 16, 8)
