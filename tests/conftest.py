"""Shared fixtures and the test layout: tests/unit (no Ray, no subprocess), tests/ray, tests/e2e, tests/helpers.

Each test is marked by its folder (``unit``, ``ray``, ``e2e``) and they run in that order,
cheapest first. ``make test`` runs every test not marked ``slow``; ``make test-all``
(``--slow`` or BUSGEN_SLOW=1) runs everything. Helpers are imported one way:
``from helpers.<module> import ...`` (``tests/`` is on pytest's pythonpath).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.paths import SHARED_BUSI, TESTS

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

FOLDERS = ("unit", "ray", "e2e")  # marker = folder; also the run order


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="also run tests marked slow")


def folder_of(item) -> str:
    parts = Path(str(item.fspath)).resolve().relative_to(TESTS).parts
    if parts[0] not in FOLDERS:
        raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/ray or tests/e2e")
    return parts[0]


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--slow") or os.environ.get("BUSGEN_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: run with make test-all (--slow or BUSGEN_SLOW=1)")
    for item in items:
        item.add_marker(getattr(pytest.mark, folder_of(item)))
        if ("slow" in item.keywords or "cluster" in item.keywords) and not run_slow:
            item.add_marker(skip_slow)
    items.sort(key=lambda item: FOLDERS.index(folder_of(item)))  # stable: file order kept within a folder


@pytest.fixture(scope="session", autouse=True)
def tracking_store(tmp_path_factory) -> str:
    """Every command's MLflow runs go to one session store, not the checkout's runs/mlruns (the default)."""
    uri = (tmp_path_factory.mktemp("tracking") / "mlruns").as_uri()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


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
    from helpers.models import export_untrained_tiny

    return export_untrained_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    if not (SHARED_BUSI / "labels.csv").exists():
        pytest.skip(f"real BUSI data not found at {SHARED_BUSI}")
    return SHARED_BUSI
