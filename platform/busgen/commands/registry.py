"""The one registry of commands that every face runs: the ``busgen`` CLI, ``jobs/*.py``, the demo and tests.

Each family module of `busgen.commands` holds its commands' configs, run functions and
registry entries side by side (``COMMANDS``); this module only collects them. Faces parse
words into the config and print or store the result, so a command behaves the same from a
terminal, from ``ray job submit`` and from Python::

    from busgen.commands.registry import command
    gen = command("generate")
    result = gen.run(gen.config_class(model="models/busgen-tiny", out="synthetic/run1", n=64))

Family modules import the library lazily (inside the run functions) and name configs by
``"module:Class"``, so listing the commands does not import torch or Ray.
"""

from __future__ import annotations

from busgen.commands import data, demo, evaluate, generate, runs, serve, studies, train
from busgen.commands.command import Command

FAMILIES = (data, train, generate, evaluate, studies, demo, serve, runs)

COMMANDS: dict[str, Command] = {c.name: c for family in FAMILIES for c in family.COMMANDS}


def command(name: str) -> Command:
    """The registered command ``name``; a clear error lists the others."""
    from busgen.core.config import ConfigError

    if name not in COMMANDS:
        raise ConfigError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    return COMMANDS[name]
