"""A model folder's ``busgen.json``: read, checked, and every path it names kept inside the folder.

Split from ``generator.py`` (which re-exports these names) so that the loader stays reviewable.
"""

from __future__ import annotations

import json
from pathlib import Path

BUSGEN_JSON = "busgen.json"


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded: its ``busgen.json`` is missing, not JSON, or lacks a field."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The folder has no ``busgen.json`` (a ``FileNotFoundError`` too, for callers that catch that)."""


class AdapterError(ModelLoadError):
    """An adapter folder that cannot be rebuilt (base model missing or changed, tensors missing)."""


REQUIRED_META = ("class_names", "domain_names", "image_size", "diffusion")
ADAPTER_META = ("adapter", "base_model", "base_model_rel", "base_model_id")
# Files of the folder itself named in busgen.json: each must resolve inside the folder. (An adapter's
# base_model/base_model_rel name another model folder on purpose; its weights id is checked instead.)
FOLDER_PATH_FIELDS = ("sampling_weights",)


def read_meta(model_dir: str | Path) -> dict:
    """A model folder's ``busgen.json``, checked to be a JSON object with the fields loading needs.

    Raises:
        ModelNotFoundError: no busgen.json in the folder.
        ModelLoadError: busgen.json is not JSON, not an object, lacks a required field, or names a file outside
            the folder.
    """
    fp = Path(model_dir) / BUSGEN_JSON
    remedy = "re-export the model with `busgen pretrain` or `busgen adapt`, or restore the folder from a copy"
    if not fp.is_file():
        raise ModelNotFoundError(
            f"not a BUSGen model directory (no {BUSGEN_JSON}): {Path(model_dir)}; pass a folder written by "
            "`busgen pretrain` or `busgen adapt`"
        )
    try:
        meta = json.loads(fp.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{fp} is not valid JSON ({exc}): {remedy}") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{fp} holds a JSON {type(meta).__name__}, not an object: {remedy}")
    required = REQUIRED_META + (ADAPTER_META if meta.get("kind") == "adapter" else ())
    missing = [k for k in required if k not in meta]
    if missing:
        raise ModelLoadError(f"{fp} lacks {', '.join(missing)}: {remedy}")
    if not isinstance(meta["class_names"], list) or not meta["class_names"]:
        raise ModelLoadError(f"{fp}: class_names must be a non-empty list, got {meta['class_names']!r}: {remedy}")
    for field in FOLDER_PATH_FIELDS:
        if field in meta:
            path_inside(Path(model_dir), meta[field], f"{fp}: {field}")
    return meta


def path_inside(root: Path, rel, what: str) -> Path:
    """``root / rel`` after resolving links and ``..``, refused unless it stays inside ``root``.

    A folder received from elsewhere must not make us load (and fingerprint as its own)
    weights from anywhere else on the machine.

    Raises:
        ModelLoadError: ``rel`` is not a relative path string, or it resolves outside ``root``.
    """
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise ModelLoadError(f"{what} must be a path relative to the model folder, got {rel!r}: fix or re-export it")
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ModelLoadError(f"{what} = {rel!r} leads outside the model folder: fix or re-export it")
    return target
