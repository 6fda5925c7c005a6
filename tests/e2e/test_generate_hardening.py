"""Generation hardening: durable shards, verified resume, one run per output folder, clear input errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from busgen.generate.shards import LOCK_FILE, GenerateConfig, GenerateError, generate

FAST = dict(sampler="ddim", steps=2, batch_size=8)


def write_lock(out, pid: int, host: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host, "started_at": "then", "token": "x"}))


def test_second_run_on_a_busy_out_is_refused_naming_the_holder(model_dir, tmp_path):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(out, holder.pid, socket.gethostname())
        partial = out / ".shard-000000000-000000004.parquet.abc.tmp"
        partial.write_bytes(b"the live run's partial shard")
        cfg = GenerateConfig(model=str(model_dir), out=str(out), n=4, shard_size=4, **FAST)
        with pytest.raises(GenerateError, match=rf"in use by another generation run \(pid {holder.pid} on this host"):
            generate(cfg, progress=False)
        assert partial.exists(), "the live run's temporary file was not deleted"
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
