"""Unit tests run in this process only: no Ray runtime, no subprocess (a test that needs either moves to
tests/ray or tests/e2e). Both are enforced here, so the folder keeps its promise of seconds-fast tests."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def ray_local():
    pytest.fail("unit tests run without Ray: move this test to tests/ray/ (or tests/e2e/)")


@pytest.fixture(autouse=True)
def no_ray_and_no_subprocess(monkeypatch, request):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid}: unit tests start no subprocess; move it to tests/e2e/")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} started Ray: unit tests run without it; move it to tests/ray/")
