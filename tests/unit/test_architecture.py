"""The layer contract of the package, read from the source with ``ast`` (nothing is imported).

Stages depend one way, down the pipeline::

    core <- data <- model <- {train, generate, serve, measure} <- {eval, testing} <- studies <- commands <- faces

``measure`` holds pure measurements (arrays in, numbers out), ``eval`` the suites built on
them, ``studies`` the research protocols built on suites, ``commands`` one module per
command family (config, run function, registry entry) and ``testing`` the fixtures that
benchmarks and tests import; the faces at the top are ``busgen.cli`` and ``busgen.jobrun``.

A module may import its own stage and the stages below it; stages on one layer (``train``,
``generate``, ``serve`` and ``measure``; ``eval`` and ``testing``) are siblings and never
import each other; the library never imports the
repository's faces (``jobs/``, ``serving/``, ``evals/``); and no two modules import each
other, directly or around a longer circle, not even lazily inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers.architecture import DOC, FACE_LAYER, LAYERS, PACKAGE, REPO_FACES, REPO_ROOT, docstring, render

MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that ``path`` imports, at top level or inside functions (``from a import b`` -> a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules or name.split(".")[0] in REPO_FACES:
                found.add(name)
    return found


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def layer(module: str) -> int:
    if module == "busgen":
        return FACE_LAYER
    return LAYERS.get(stage(module) or "", FACE_LAYER)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: imported_modules(path, modules) - {name} for name, path in modules.items()}


def test_every_stage_folder_exists_and_the_source_root_is_not_a_package():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    for name in LAYERS:
        assert (PACKAGE / name / "__init__.py").is_file(), name


def test_imports_point_down_the_pipeline(graph):
    wrong = []
    for module, imports in graph.items():
        for target in imports:
            if target.split(".")[0] in REPO_FACES:
                wrong.append(f"{module} imports the face {target}")
            elif target == "busgen" or stage(target) == stage(module):
                continue
            elif layer(target) > layer(module) or (layer(target) == layer(module) and layer(module) != FACE_LAYER):
                wrong.append(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles(graph):
    """Tarjan's strongly connected components: any component with two or more modules is a circle."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_circles_and_upward_imports(tmp_path):
    """The checker itself: a lazy import inside a function counts, and so does ``from pkg import module``."""
    fake = {"busgen.model.unet": tmp_path / "unet.py", "busgen.train.pretrain": tmp_path / "pretrain.py"}
    fake["busgen.model.unet"].write_text("def f():\n    from busgen.train import pretrain\n")
    fake["busgen.train.pretrain"].write_text("from busgen.model import unet\n")
    assert imported_modules(fake["busgen.model.unet"], fake) == {"busgen.train.pretrain"}
    assert imported_modules(fake["busgen.train.pretrain"], fake) == {"busgen.model.unet"}
    assert layer("busgen.train.pretrain") > layer("busgen.model.unet")


def test_library_files_stay_reviewable():
    long_files = {
        str(p.relative_to(REPO_ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long_files, f"files over {MAX_LINES} lines: {long_files}"


def test_no_stage_holds_over_a_quarter_of_the_library():
    lines = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    total = sum(lines.values())
    by_stage = {name: sum(n for p, n in lines.items() if name in p.relative_to(PACKAGE).parts[:1]) for name in LAYERS}
    big = {name: n for name, n in by_stage.items() if n > total / 4}
    assert not big, f"stages over a quarter of the library's {total} lines: {big}"


def test_every_module_says_what_it_holds():
    missing = [str(p.relative_to(REPO_ROOT)) for p in sorted(PACKAGE.rglob("*.py")) if not docstring(p).strip()]
    assert not missing, f"modules without a docstring: {missing}"


def test_the_architecture_document_is_generated_from_the_code():
    """docs/ARCHITECTURE.md lists every module with its docstring: a module added or moved must regenerate it."""
    text, expected = DOC.read_text(), render()
    if text != expected:
        stale = [line for line in expected.splitlines() if line.startswith("| `") and line not in text]
        pytest.fail(f"docs/ARCHITECTURE.md is out of date (new or changed rows: {stale[:5]}): run `make architecture`")
