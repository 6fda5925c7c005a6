"""Issue 31, "logs": a user's terminal shows the project's lines, not Ray's; Ctrl-C says how to resume.

A short ``busgen pretrain`` (the real command in a fresh interpreter, its own local Ray)
printed 117 lines of which 11 were ours. Now Ray's chatter (``TrainingReport(...)``,
token-auth warnings, Ray Data progress tables, a ``PlacementGroupCleaner`` traceback when
another Ray instance runs, worker dumps) goes only to Ray's session log folder. Ctrl-C
stops the run with one line naming the run to resume and exit status 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.data import write_phantom_dataset

from busgen.core.raylogs import is_project_line

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FOREIGN_LINES_AT_MOST = 3  # a Ray error that matters may still show; chatter may not


def pretrain(tmp_path: Path, *words: str) -> subprocess.Popen:
    """``busgen pretrain`` on a tiny phantom set, stdout+stderr to one file (a full pipe would block it)."""
    data = write_phantom_dataset(tmp_path / "data", 32, size=32)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("BUSGEN_RAY_LOGS", None)
    argv = [sys.executable, "-m", "busgen.cli", "pretrain", "--config", "pretrain_tiny", f"data_dir={data}"]
    argv += [f"out={tmp_path / 'model'}", f"storage_path={tmp_path / 'runs'}", "run_name=r1", "warmup_steps=1"]
    return subprocess.Popen([*argv, *words], stdout=(tmp_path / "out.txt").open("w"), stderr=subprocess.STDOUT, env=env)


def test_a_short_pretrain_prints_mostly_its_own_lines(tmp_path):
    proc = pretrain(tmp_path, "max_steps=4", "log_every=1", "checkpoint_every=4")
    assert proc.wait(timeout=540) == 0, (tmp_path / "out.txt").read_text()
    lines = [line for line in (tmp_path / "out.txt").read_text().splitlines() if line.strip()]
    foreign = [line for line in lines if not is_project_line(line) and not line.startswith("pretrained ")]
    assert not any("TrainingReport" in line for line in lines)
    assert len(foreign) <= FOREIGN_LINES_AT_MOST, "\n".join(foreign)
    assert sum(line.startswith("[pretrain] step ") for line in lines) == 4  # our progress still comes through
    assert lines[-1].startswith("pretrained tiny to step 4")


def test_ctrl_c_on_pretrain_prints_how_to_resume(tmp_path):
    proc = pretrain(tmp_path, "max_steps=400", "log_every=1", "checkpoint_every=2")
    out = tmp_path / "out.txt"
    deadline = time.monotonic() + 420
    while "[pretrain] step 3/" not in out.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, out.read_text()
    last = out.read_text().strip().splitlines()[-1]
    assert last.startswith("interrupted: run the same command again (run_name=r1) to resume"), last
