"""The GPU benchmarks run on CPU at smoke size, print their headline last, and never import Ray.

A bare GPU machine has torch but no Ray, so the check is strict: a ``ray`` package that
raises on import is put first on the path, and the benchmarks must still finish.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from helpers.paths import REPO_ROOT

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def no_ray_path(tmp_path_factory) -> str:
    site = tmp_path_factory.mktemp("no_ray")
    (site / "ray").mkdir()
    (site / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed on this GPU machine')\n")
    return str(site)


@pytest.mark.parametrize(
    "script, args",
    [
        ("gpu_train.py", ["--steps", "1", "--warmup", "1", "--batch", "2"]),
        ("gpu_sample.py", ["--steps", "2", "--batch", "2"]),
    ],
)
def test_gpu_benchmark_smoke_without_ray(script, args, no_ray_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([no_ray_path, os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    out_json = tmp_path / "rows.json"
    cmd = [sys.executable, str(ROOT / "evals" / "benchmarks" / script), "--device", "cpu", *args]
    proc = subprocess.run(
        [*cmd, "--json", str(out_json)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    name = script.removesuffix(".py")
    assert re.match(rf"^{name} ratio=\d+\.\d+ \(.+\)$", last), last
    rows = json.loads(out_json.read_text())["rows"]
    assert len(rows) >= 4 and all(r["images_per_s"] > 0 for r in rows)
    assert rows[0]["mfu"] is None  # no peak known on CPU
