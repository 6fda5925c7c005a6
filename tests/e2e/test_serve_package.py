"""The serve application is part of the installed package: no repository folder and no sys.path edits needed.

``busgen.serve.app`` holds the deployments and ``build_app``; ``serving/app.py`` is only a
deploy entry that re-exports it, and ``serving/config.yaml`` imports the library
directly. The install tests build the package non-editably into a temp folder and import it from
a working directory outside the repository, with every repository path removed from sys.path.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT
from helpers.serve import free_port

import busgen.serve.app as serve_app

pytestmark = pytest.mark.timeout(240)


PURE_MODULES = (
    "config",
    "schemas",
    "auth",
    "guards",
    "registry",
    "access_log",
    "batching",
    "errors",
    "responses",
    "middleware",
    "gallery",
    "nearest",
    "study",
    "examples",
)


RESULT = "RESULT "  # prefix of the line a subprocess check prints its JSON on


def test_pure_serve_modules_and_the_app_load_neither_torch_nor_a_ray_runtime():
    pure = "; ".join(f"import busgen.serve.{m}" for m in PURE_MODULES)
    code = (
        f"import sys; {pure}; assert 'ray' not in sys.modules and 'torch' not in sys.modules, 'pure'; "
        "import busgen.serve.app, ray; assert 'torch' not in sys.modules, 'app'; assert not ray.is_initialized()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_serving_entry_re_exports_the_library_builder(monkeypatch, tmp_path):
    import serving.app

    assert serving.app.build_app is serve_app.build_app
    monkeypatch.delenv("BUSGEN_GENERATORS", raising=False)
    assert importlib.reload(serving.app).app is None, "no $BUSGEN_GENERATORS: importing builds nothing"
    monkeypatch.setenv("BUSGEN_GENERATORS", f"a={tmp_path}")
    monkeypatch.setenv("BUSGEN_INSECURE_LOCAL", "1")
    try:
        assert type(importlib.reload(serving.app).app).__name__ == "Application"
    finally:
        monkeypatch.delenv("BUSGEN_GENERATORS")
        importlib.reload(serving.app)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A non-editable install of a copy of the package sources (the checkout itself stays untouched)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(
        REPO_ROOT / "platform", src / "platform", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    out = subprocess.run(
        [*cmd, "--target", str(root / "site"), str(src)], capture_output=True, text=True, timeout=180, cwd=root
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def run_outside_repo(installed: Path, code: str, timeout: int = 120) -> dict:
    """Run ``code`` from a cwd outside the repository with only the installed copy importable.

    ``code`` prints its findings as ``RESULT <json>`` (Ray and Serve log to stdout too).
    """
    prelude = (
        "import sys, json, importlib.util\n"
        f"RESULT = {RESULT!r}\n"
        f"repo = {str(REPO_ROOT)!r}\n"
        "def in_checkout(p):  # the repo root and the editable install's platform/ (the venv may live in the repo)\n"
        "    return p.startswith(repo) and not p.startswith(sys.prefix)\n"
        "sys.path = [p for p in sys.path if not in_checkout(p)]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed / "site"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=installed, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    assert results, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(results[-1][len(RESULT) :])


def test_installed_package_builds_the_app_without_the_repository(installed):
    code = (
        "import busgen.serve.app as m\n"
        "from busgen.serve.app import args_from_env, build_app, run_local\n"
        "from busgen.serve.config import ServeArgs\n"
        "app = build_app(ServeArgs(generators={'a': '/nowhere'}, insecure_local=True))\n"
        "from pathlib import Path\n"
        "static = sorted(p.name for p in (Path(m.__file__).parent / 'static').iterdir())\n"
        "print(RESULT + json.dumps({'file': m.__file__, 'app': type(app).__name__, 'static': static,\n"
        "                  'serving': importlib.util.find_spec('serving') is not None}))\n"
    )
    out = run_outside_repo(installed, code)
    assert out["file"].startswith(str(installed / "site")), out["file"]
    assert out["app"] == "Application"
    assert out["static"] == ["app.js", "index.html", "style.css"], "the playground ships in the package data"
    assert not out["serving"], "the repository's serving/ folder must not be importable in this check"


@pytest.mark.slow
def test_installed_package_serves_over_http_without_the_repository(installed):
    """run_local from the installed copy: Ray workers find every deployment in the package (~60 s)."""
    from helpers.models import export_untrained_tiny

    model_dir = export_untrained_tiny(installed / "model", seed=0, size=32)
    code = (
        "import ray, requests\n"
        "from ray import serve\n"
        "from busgen.serve.app import run_local\n"
        f"url = run_local({{'tiny': {str(model_dir)!r}}}, port={free_port()}, insecure_local=True, blocking=False,\n"
        "    ingress_num_cpus=0.25, generator={'num_cpus': 0.5, 'torch_threads': 1})\n"
        "try:\n"
        "    ready = requests.get(url + '/readyz', timeout=120).status_code\n"
        "    gen = requests.post(url + '/v1/generate', json={'label': 'benign', 'steps': 2}, timeout=120)\n"
        "    where = ray.get(ray.remote(lambda: __import__('busgen').__file__).remote())\n"
        "    print(RESULT + json.dumps({'ready': ready, 'generate': gen.status_code, 'n': len(gen.json()['images']),\n"
        "                      'worker_busgen': where}))\n"
        "finally:\n"
        "    serve.shutdown(); ray.shutdown()\n"
    )
    out = run_outside_repo(installed, code, timeout=200)
    assert out["ready"] == 200 and out["generate"] == 200 and out["n"] == 1, out
    assert out["worker_busgen"].startswith(str(installed / "site")), out
