"""One command of the platform: its typed config, its run function and how the faces present it.

A command is named by lazy ``"module:attr"`` references, so the registry can list every
command (``busgen --help``) without importing torch or Ray: the one-line summary is the
first line of the config class's docstring, read from the source with ``ast``. Running a
command resolves both references, makes the path fields absolute (Ray workers run in
another working directory than the driver) and calls ``run(cfg) -> dict`` of JSON-able
results; the ``summary`` entry is what the CLI prints.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from busgen.core.storage import resolve_location


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command that can be resumed; the message says how (the CLI prints it as one line)."""


def resolve(ref: str) -> Any:
    """The object a ``"module:attr"`` reference names (imports the module)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def docstring_summary(ref: str) -> str:
    """First line of the docstring of the class ``"module:Class"`` names, read without importing the module."""
    module, _, name = ref.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"no module {module!r} for the command config {ref!r}")
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            doc = ast.get_docstring(node) or ""
            return doc.strip().splitlines()[0] if doc.strip() else ""
    raise ValueError(f"{module} defines no class {name!r} (command config {ref!r})")


@dataclass(frozen=True)
class Command:
    """A registry entry: every face (CLI, ``jobs/*.py``, the demo, tests) runs a command through this."""

    name: str
    config: str  # "module:Class" of the typed config (pydantic); its docstring's first line is the summary
    function: str  # "module:function" taking the config, returning a dict of results
    positional: tuple[str, ...] = ()  # CLI positional arguments, in order, as config fields
    location_fields: tuple[str, ...] = ()  # path fields made absolute before running

    @cached_property
    def summary(self) -> str:
        return docstring_summary(self.config)

    @property
    def config_class(self) -> type[BaseModel]:
        return resolve(self.config)

    def run(self, cfg: BaseModel) -> dict:
        """Run the command on ``cfg`` (paths made absolute); returns its results."""
        updates = {}
        for name in self.location_fields:
            value = getattr(cfg, name, None)
            if isinstance(value, str) and value:
                updates[name] = resolve_location(value)
        return resolve(self.function)(cfg.model_copy(update=updates) if updates else cfg)
