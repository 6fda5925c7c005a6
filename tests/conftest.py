"""Shared fixtures: one local Ray runtime per test session, temp dirs, small phantom sets.

Fast tests run by default; tests marked ``slow`` run with ``--slow`` or BUSGEN_SLOW=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BUSI = REPO_ROOT.parent / "shared" / "data" / "busi128"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--slow") or os.environ.get("BUSGEN_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: run with --slow or BUSGEN_SLOW=1")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def ray_local():
    """One loopback Ray runtime for the whole session (starting Ray costs ~5 s)."""
    import ray

    from busgen.core.raylocal import init_ray

    # 4 logical CPUs on a 2-core box: Ray Data actor pools plus read/write tasks need
    # more slots than cores or they deadlock (see shared NOTES.md).
    init_ray(num_cpus=4, object_store_mb=512, quiet=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def torch_one_thread():
    """Small CPU models run faster single-threaded on a shared 2-core box; restore afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny generator folder (generation plumbing, not image quality); a module may override it."""
    from helpers_models import export_untrained_tiny

    return export_untrained_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    if not (SHARED_BUSI / "labels.csv").exists():
        pytest.skip(f"real BUSI data not found at {SHARED_BUSI}")
    return SHARED_BUSI
