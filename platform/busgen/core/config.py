"""Typed run configs from a YAML file plus ``key=value`` overrides.

Every job takes ``--config file.yaml`` and trailing ``key=value`` pairs (dotted keys
reach nested models: ``model.dropout=0.1``). Values are parsed with
``yaml.safe_load`` so ``lr=3e-4``, ``use_gpu=true`` and ``sizes=[1,2]`` get their
natural types. Unknown keys and wrong types fail loudly: a typo in a sweep must not
silently train with the default.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

# How much of a wrong value an error message quotes. YAML aliases let a few hundred bytes
# stand for a structure of billions of items (an "alias bomb"); a plain repr() would expand
# it all, so messages quote a few items per level and a few levels deep, then "...".
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 3, 60, 60
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = _QUOTE.maxfrozenset = 4
QUOTE_MAX_CHARS = 200


class ConfigError(ValueError):
    """A config file or override that does not fit the config class; the message says why."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1e-3"`` -> (["a", "b"], 0.001)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from None
    return key.strip().split("."), value


def set_nested(data: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = data.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is not a section")
        data = node
    data[path[-1]] = value


def quote(value: Any) -> str:
    """A short repr of ``value`` for an error message, bounded in time and length whatever its size."""
    text = _QUOTE.repr(value)
    return text if len(text) <= QUOTE_MAX_CHARS else text[: QUOTE_MAX_CHARS - 3] + "..."


def check_keys(cls: type[BaseModel], data: dict, prefix: str = "") -> None:
    """Reject keys ``cls`` does not declare, recursing into nested pydantic models."""
    fields = cls.model_fields
    for key, value in data.items():
        if key not in fields:
            hint = getattr(cls, "wrong_file_hint", None)  # a config may recognise another command's file
            if hint is not None and (message := hint(data)):
                raise ConfigError(message)
            raise ConfigError(f"unknown config key {prefix + key!r} for {cls.__name__}; valid keys: {sorted(fields)}")
        sub = fields[key].annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict):
            check_keys(sub, value, prefix + key + ".")


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML{at}: {problem}; fix the file or pass another") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), values: dict | None = None
) -> T:
    """Build ``cls`` from defaults, then the YAML file at ``path``, then ``values``, then ``key=value`` overrides.

    ``values`` are already-typed top-level fields (the CLI's ``--name value`` options).

    Raises:
        ConfigError: missing or malformed file, malformed override, unknown key or a value of the wrong type.
    """
    data = read_yaml(path) if path else {}
    data.update(values or {})
    for item in overrides:
        keys, value = parse_override(item)
        set_nested(data, keys, value)
    check_keys(cls, data)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {quote(e.get('input'))})" for e in errors[:10]
        ) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise ConfigError(f"invalid {cls.__name__} config: {problems}") from None
