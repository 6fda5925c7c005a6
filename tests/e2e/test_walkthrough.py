"""The first-day walkthrough (docs/walkthrough.sh) runs from a fresh checkout to a served, answering model.

It is the README's promise to a newcomer: phantom data -> ingest -> pretrain -> sample ->
generate -> train-classifier -> serve -> curl, on loopback, cleaning Serve and Ray up
afterwards. The script itself is run, as a user runs it (``bash docs/walkthrough.sh DIR``),
with ``BUSGEN`` pointing at this checkout's CLI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers.paths import REPO_ROOT
from helpers.serve import LOOPBACK, free_port
from PIL import Image

pytestmark = pytest.mark.timeout(1800)  # generous: beside other jobs on a shared 2-core box it took 15 min


@pytest.mark.slow  # six Ray runtimes in a row: about 2-3 minutes on an idle 2-core machine
def test_the_walkthrough_runs_end_to_end_and_leaves_no_server(tmp_path):
    work, port = tmp_path / "walk", free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "BUSGEN": f"{sys.executable} -m busgen.cli",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    start = time.monotonic()
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "docs" / "walkthrough.sh"), str(work)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1700,
    )
    took = time.monotonic() - start
    assert out.returncode == 0, (out.stdout[-4000:], out.stderr[-4000:])
    for n, what in enumerate(["phantom", "pretrain", "sample", "generate", "classifier", "serve", "ask"], 1):
        assert f"=== {n}. " in out.stdout and what in out.stdout.lower(), what
    models = json.loads((work / "models.json").read_text())
    assert [g["id"] for g in models["generators"]] == ["tiny"] and models["galleries"] == ["synthetic"]
    assert json.loads((work / "generated.json").read_text())["images"]
    assert set(json.loads((work / "classified.json").read_text())["probs"]) == {"benign", "malignant", "normal"}
    assert Image.open(work / "samples.png").size[1] > 0
    assert (work / "models" / "classifier" / "model.safetensors").is_file()
    assert (work / "models" / "tiny" / "model_index.json").is_file(), "the walkthrough's model is a diffusers pipeline"
    serve_log = (work / "serve.log").read_text()
    assert "taken more than 30s to be scheduled" not in serve_log
    for _ in range(60):  # the exit handler stopped the server; Ray's HTTP proxy may take a few seconds to go
        try:
            socket.create_connection((LOOPBACK, port), timeout=5).close()
        except OSError:
            break
        time.sleep(1)
    else:
        pytest.fail(f"port {port} still answers 60 s after the walkthrough ended")
    print(f"walkthrough: {took:.0f} s end to end")
