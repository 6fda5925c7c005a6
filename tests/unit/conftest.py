"""Unit tests run in this process only: no Ray runtime, no Python subprocess (a test that needs either moves to
tests/ray or tests/e2e). Both are enforced here, so the folder keeps its promise of seconds-fast tests.

Libraries may still run small system tools (MLflow asks ``uname -p`` once per process): only commands that
start Python, the CLI or Ray are refused.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def ray_local():
    pytest.fail("unit tests run without Ray: move this test to tests/ray/ (or tests/e2e/)")


@pytest.fixture(autouse=True)
def no_ray_and_no_subprocess(monkeypatch, request):
    popen = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        first = args if isinstance(args, (str, bytes, os.PathLike)) else (args[0] if args else "")
        name = os.path.basename(os.fsdecode(first).split()[0]) if first else ""
        if name.startswith(("python", "busgen", "ray", "pytest")) or name == os.path.basename(sys.executable):
            raise AssertionError(f"{request.node.nodeid}: unit tests start no Python subprocess; move it to tests/e2e/")
        return popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} started Ray: unit tests run without it; move it to tests/ray/")
