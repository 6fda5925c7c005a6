"""The package's layers, and docs/ARCHITECTURE.md rendered from the code (``make architecture`` rewrites it).

The layer table here is what ``tests/unit/test_architecture.py`` enforces; the module tables
of the document are each package's docstring and the first line of each module's docstring,
read with ``ast`` (nothing is imported), so a module added without a docstring, or a document
not regenerated after a module was added, fails the test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "platform" / "busgen"
DOC = REPO_ROOT / "docs" / "ARCHITECTURE.md"

# stage -> layer: a module may import its own stage and lower layers; stages on one layer are siblings
LAYERS = {
    "core": 0,
    "data": 1,
    "model": 2,
    "train": 3,
    "generate": 3,
    "serve": 3,
    "measure": 3,
    "eval": 4,
    "testing": 4,
    "studies": 5,
    "commands": 6,
}
FACE_LAYER = 7  # busgen/*.py at the top: cli, jobrun
REPO_FACES = ("jobs", "serving", "evals")

PREAMBLE = """# BUSGen Platform architecture and module contracts

_Generated from the code by `make architecture` (`tests/helpers/architecture.py`); a test fails
when it is out of date. Edit the docstrings, not this file._

Source root `platform/` (no `__init__.py`: a `platform` package would shadow the stdlib
module that Ray and torch import) holds the package `platform/busgen/`. The library is one
subpackage per pipeline stage, then measurements, suites, studies and commands above them;
the faces (the `busgen` CLI, `jobs/`, `serving/`, `evals/`) only parse arguments and run a
registered command (`busgen.commands.registry`).

## Layers

```
core <- data <- model <- { train, generate, serve, measure } <- { eval, testing }
     <- studies <- commands <- faces (cli.py, jobrun.py; jobs/, serving/, evals/)
```

A module imports its own stage and the layers to its left, never to its right, and never a
sibling on its own layer (`train`, `generate`, `serve` and `measure` never import each other;
nor do `eval` and `testing`); the library never imports `jobs/`, `serving/` or `evals/`; there
are no import circles, not even lazy ones; no library file is over 450 lines and no stage over
a quarter of the library's lines. `tests/unit/test_architecture.py` reads every import with
`ast` and fails on any of these. Lazy (in-function) imports are kept for torch and Ray, where
import time matters (`busgen --help` imports neither).

## Modules
"""

CONTRACTS = """## Dataset contract (ingested and synthetic sets alike)
A dataset is a directory of Parquet files (`*.parquet`, possibly nested) plus `dataset.json`
(ingest) or `manifest.json` (generation). Columns (`data/schema.py`): `image` PNG bytes
(uint8 grayscale, size x size), `mask` PNG bytes or null, `box` list<float32>[4] normalised
x0,y0,x1,y1 or null, `label` str, `domain` str, `split` str (train/val/test), `source`
(a salted hash when paths are redacted), `sha256`, `orig_width`, `orig_height`. Synthetic sets
add `index`, `seed`, `model_id`, `sampler`, `steps`, `guidance`, `created_at` and carry
`split="train"`.

`busgen.data.dataset`:
- `load(path, split=None, classes=None) -> ray.data.Dataset`
- `read_table(path, columns=None, split=None, classes=None) -> pyarrow.Table` (in-process, small sets)
- `decode_images(pngs) -> np.ndarray (N, H, W) uint8`
- `read_arrays(path, split=None, classes=None) -> (images uint8 (N, H, W), labels, boxes, domains)`
- `iter_torch_batches(path, batch_size, class_names, split=None)` yields `(x float32 (B, 1, H, W) in [-1, 1], y int64)`

## Model folder contract
`busgen.json` (format version, model config, class and domain names, diffusion config, data
fingerprint, `model_id`), `unet/` and `unet_ema/` (diffusers safetensors), `scheduler/`,
`box_prior.json`. An adapter folder has `kind: adapter`, peft's `adapter_config.json` +
`adapter_model.safetensors`, `conditions.safetensors`, its
`AdapterSpec` fields, the base model's path and id, and `support.json`.
`busgen.model.generator.load(dir) -> Generator` with `class_names`, `domain_names`,
`model_id` and `sample(labels, domains=None, boxes=None, steps=25, guidance=1.8, seed=0,
sampler="ddim", seeds=None, batch_size=64) -> np.ndarray uint8 (N, H, W)`; `seeds` (one per
image) makes image i independent of batch composition.

## Evaluation result contract
`busgen.eval.results.EvalResult` (pydantic) is what `run_suite` returns and `results.json`
holds: suite params, inputs, utility trials and seed-paired deltas per test set, fidelity,
privacy, sampler steps, and `metrics` (headline scalars). `EvalResult.read(folder)` reads it
back; the report renders from it alone.

## Ray on this machine
Always `busgen.core.raylocal.init_ray()` (loopback `_node_ip_address="127.0.0.1"`, attaches to
`RAY_ADDRESS` when set). Tests share one Ray runtime per session.
"""


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def first_line(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def paragraph(text: str) -> str:
    return " ".join(text.split())


def module_rows(folder: Path) -> list[tuple[str, str]]:
    rows = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).as_posix()
        if rel == "__init__.py":
            continue
        rows.append((rel, first_line(docstring(path)).replace("|", "\\|")))
    return rows


def render() -> str:
    parts = [PREAMBLE]
    stages = sorted(LAYERS, key=lambda s: (LAYERS[s], s))
    for stage in stages:
        folder = PACKAGE / stage
        parts.append(f"\n### `{stage}/` (layer {LAYERS[stage]})\n\n{paragraph(docstring(folder / '__init__.py'))}\n")
        parts.append("\n| module | what it holds |\n|---|---|\n")
        parts.extend(f"| `{name}` | {line} |\n" for name, line in module_rows(folder))
    parts.append(f"\n### Faces (layer {FACE_LAYER})\n\n| module | what it holds |\n|---|---|\n")
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name != "__init__.py":
            parts.append(f"| `busgen/{path.name}` | {first_line(docstring(path))} |\n")
    for face in REPO_FACES:
        for path in sorted((REPO_ROOT / face).rglob("*.py")):
            if path.name != "__init__.py":
                parts.append(f"| `{path.relative_to(REPO_ROOT).as_posix()}` | {first_line(docstring(path))} |\n")
    parts.append("\n" + CONTRACTS)
    return "".join(parts)


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}", file=sys.stderr)
