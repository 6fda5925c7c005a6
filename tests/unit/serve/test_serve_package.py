"""The serve application is part of the installed package: no repository folder and no sys.path edits needed.

``busgen.serve.app`` holds the deployments and ``build_app``; ``serving/app.py`` is only a
deploy entry that re-exports it, and ``serving/config.yaml`` imports the library
directly. The install tests build the package non-editably into a temp folder and import it from
a working directory outside the repository, with every repository path removed from sys.path.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from helpers.paths import REPO_ROOT

from busgen.serve.config import ServeArgs

pytestmark = pytest.mark.timeout(240)


SERVE_DIR = REPO_ROOT / "platform" / "busgen" / "serve"


FORBIDDEN_IMPORTS = ("busgen.eval", "busgen.train", "busgen.generate", "serving", "jobs", "evals")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_serve_modules_import_only_earlier_stages_and_never_edit_sys_path():
    for path in sorted(SERVE_DIR.glob("*.py")):
        bad = {m for m in imported_modules(path) for f in FORBIDDEN_IMPORTS if m == f or m.startswith(f + ".")}
        assert not bad, f"{path.name} imports {sorted(bad)}: serve may use core, data and model only"
        text = path.read_text()
        assert "sys.path" not in text and "PYTHONPATH" not in text, f"{path.name} edits the import path"
        assert len(text.splitlines()) < 450, f"{path.name} is over 450 lines"


def test_config_yaml_imports_the_library_builder_and_its_args_validate():
    config = yaml.safe_load((REPO_ROOT / "serving" / "config.yaml").read_text())
    (application,) = config["applications"]
    module, _, attr = application["import_path"].partition(":")
    assert module.startswith("busgen."), "import_path must not need the repository's serving/ folder"
    builder = getattr(importlib.import_module(module), attr)
    (param,) = inspect.signature(builder).parameters.values()
    assert param.annotation is ServeArgs, "Serve validates args through this annotation"
    args = ServeArgs.model_validate(application["args"])
    assert args.default_id == "base"
    names = {d["name"] for d in application["deployments"]}
    assert names == {"Ingress", "GeneratorDeployment", "ClassifierDeployment"}
    assert all(d["max_queued_requests"] > 0 for d in application["deployments"]), "every queue is bounded"
    assert config["http_options"]["host"] == "127.0.0.1" and not args.insecure_local
