"""Command-line words -> a typed config, the same way for the ``busgen`` CLI and ``jobs/*.py``.

Every operation accepts::

    [POSITIONAL ...] [--config FILE] [--field-name VALUE | --flag | --no-flag ...] [key=value ...]

``--field-name`` reaches a top-level field of the operation's config (dashes for
underscores); ``key=value`` overrides reach nested fields (``utility.seeds=[0,1]``) and
are parsed as YAML. Option values are read according to the field's type: text fields
stay text (``--seed-name 007`` is the string "007"), list fields take ``a,b,c``, mapping
fields take ``a=0.5,b=0.5``, and everything else is parsed as YAML (``--lr 3e-4``).
Precedence: class defaults < ``--config`` file < options < ``key=value`` overrides.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from busgen.core.config import ConfigError, load_config

T = TypeVar("T", bound=BaseModel)


@dataclass
class CommandArgs:
    """What the words on a command line asked for, before validation."""

    config: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


def _kinds(annotation: Any) -> set[str]:
    """The shapes a field accepts: 'text', 'list', 'dict', 'bool' or 'other' (``X | None`` unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(annotation) if a is not type(None)))
    if annotation in (str, Path):
        return {"text"}
    if annotation is bool:
        return {"bool"}
    if origin in (list, tuple, set) or annotation in (list, tuple):
        return {"list"}
    if origin is dict or annotation is dict:
        return {"dict"}
    if origin is typing.Literal:
        return {"text"} if all(isinstance(a, str) for a in typing.get_args(annotation)) else {"other"}
    return {"other"}


def _split_pairs(raw: str, flag: str) -> dict[str, Any]:
    """``"benign=0.5,malignant=0.5"`` -> {"benign": 0.5, "malignant": 0.5}; a bare name means weight 1."""
    out = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        out[name.strip()] = yaml.safe_load(value) if sep and value.strip() else 1.0
        if out[name.strip()] is None:
            raise ConfigError(f"{flag}: cannot read {part!r}; use name=value,other=value")
    return out


def parse_value(cls: type[BaseModel], name: str, raw: str) -> Any:
    """An option's text as the field ``name`` of ``cls`` expects it (see module docstring)."""
    kinds = _kinds(cls.model_fields[name].annotation)
    flag = f"--{name.replace('_', '-')}"
    stripped = raw.strip()
    if "list" in kinds and not stripped.startswith("["):
        return [v.strip() for v in stripped.split(",") if v.strip()]
    if "dict" in kinds and not stripped.startswith("{"):
        return _split_pairs(stripped, flag)
    if kinds == {"text"}:
        return raw
    try:
        return yaml.safe_load(raw) if stripped else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag}: cannot parse {raw!r}: {exc}") from None


def parse_command(cls: type[BaseModel], words: Sequence[str], positional: Sequence[str] = ()) -> CommandArgs:
    """Sort command-line ``words`` into a config file, typed option values and ``key=value`` overrides.

    Raises:
        ConfigError: an option the config does not have, a missing value, or too many positional words.
    """
    fields = cls.model_fields
    args, queue, i = CommandArgs(), list(positional), 0
    words = list(words)
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            key, eq, inline = word[2:].partition("=")
            name = key.replace("-", "_")
            if name == "config" and name not in fields:
                value = inline if eq else (words[i + 1] if i + 1 < len(words) else None)
                if value is None:
                    raise ConfigError(f"{word} needs a value")
                setattr(args, name, value)
                i += 1 if eq else 2
                continue
            if name.startswith("no_") and name[3:] in fields and "bool" in _kinds(fields[name[3:]].annotation):
                args.values[name[3:]] = False
                i += 1
                continue
            if name not in fields and f"{name}s" in fields and "list" in _kinds(fields[f"{name}s"].annotation):
                # a repeatable singular option: --allow-root A --allow-root B -> allow_roots=[A, B]
                if not eq and i + 1 >= len(words):
                    raise ConfigError(f"{word} needs a value")
                args.values.setdefault(f"{name}s", []).append(inline if eq else words[i + 1])
                i += 1 if eq else 2
                continue
            if name not in fields:
                valid = ", ".join(f"--{f.replace('_', '-')}" for f in fields)
                raise ConfigError(f"unknown option {word} for {cls.__name__}; valid options: {valid}")
            if "bool" in _kinds(fields[name].annotation) and not eq:
                nxt = words[i + 1] if i + 1 < len(words) else None
                if nxt is not None and nxt.lower() in ("true", "false"):
                    args.values[name] = nxt.lower() == "true"
                    i += 2
                else:
                    args.values[name] = True
                    i += 1
                continue
            if not eq and i + 1 >= len(words):
                raise ConfigError(f"{word} needs a value")
            args.values[name] = parse_value(cls, name, inline if eq else words[i + 1])
            i += 1 if eq else 2
        elif "=" in word and word.split("=", 1)[0].replace(".", "").replace("_", "").isalnum():
            args.overrides.append(word)
            i += 1
        else:
            if not queue:
                raise ConfigError(f"unexpected argument {word!r}: use --name value or key=value")
            name = queue[0]
            if "list" in _kinds(fields[name].annotation) and len(queue) == 1:
                args.values.setdefault(name, []).append(word)  # a last list positional takes every word left
            else:
                args.values[queue.pop(0)] = parse_value(cls, name, word)
            i += 1
    return args


# where `--config NAME` finds NAME.yaml when NAME is not a file: package data, so names resolve from any folder
SUITES_DIR = Path(__file__).resolve().parents[1] / "configs"


def pop_option(words: Sequence[str], flag: str) -> tuple[list[str], str | None]:
    """``words`` without ``flag VALUE`` (or ``flag=VALUE``), and that value (None when absent)."""
    words = list(words)
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[:i] + words[i + 2 :], words[i + 1]
        if word.startswith(flag + "="):
            return words[:i] + words[i + 1 :], word.split("=", 1)[1]
    return words, None


def resolve_config_path(config: str) -> str:
    """A config file path; a bare name such as ``utility_ci`` finds the shipped ``busgen/configs/utility_ci.yaml``."""
    named = SUITES_DIR / f"{config}.yaml"
    return str(named) if not Path(config).is_file() and named.is_file() else config


def config_from_words(cls: type[T], words: Sequence[str], positional: Sequence[str] = ()) -> tuple[T, CommandArgs]:
    """The validated config for ``words`` (see ``parse_command``), and the parsed words themselves."""
    args = parse_command(cls, words, positional)
    if args.config:
        args.config = resolve_config_path(args.config)
    return load_config(cls, args.config, args.overrides, args.values), args


def field_help(cls: type[BaseModel]) -> dict[str, str]:
    """Each field's ``Field(description=...)``: the help text of its option and its YAML key."""
    return {name: info.description or "" for name, info in cls.model_fields.items()}


def type_name(annotation: Any) -> str:
    """A short human name of a field type: ``int``, ``str | None``, ``ddpm|ddim|dpmpp``, ``list[str]``."""
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_fields(cls: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(option, type, default, description) per field, for help texts; required fields show ``required``."""
    comments = field_help(cls)
    rows = []
    for name, info in cls.model_fields.items():
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        rows.append((f"--{name.replace('_', '-')}", type_name(info.annotation), default, comments.get(name, "")))
    return rows


def defaults_yaml(cls: type[BaseModel]) -> str:
    """The config's defaults as a YAML file a user can copy and edit: one commented line per field."""
    comments = field_help(cls)
    lines = [f"# {cls.__name__} defaults; fill in the fields marked required"]
    for name, info in cls.model_fields.items():
        value = None if info.is_required() else to_jsonable_python(info.get_default(call_default_factory=True))
        text = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()[1:-1]
        note = "required" if info.is_required() else ""
        note = "; ".join(n for n in (note, comments.get(name, "")) if n)
        lines.append(f"{text}  # {note}" if note else text)
    return "\n".join(lines) + "\n"
