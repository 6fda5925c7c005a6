"""Find a Hugging Face Hub repo id in the local Hub cache, so ``generator.load`` takes ``owner/name``.

The cache is ``HF_HUB_CACHE`` (default ``~/.cache/huggingface/hub``), filled by
``huggingface-cli download`` or any ``huggingface_hub`` download. Nothing here
downloads; a local folder of the same name wins. Kept apart from `busgen.model.hub`
(the export) so the generator can use it without an import circle.
"""

from __future__ import annotations

from pathlib import Path


def looks_like_repo_id(name: str) -> bool:
    """``owner/name`` with no path-like start: what the Hub calls a repo id."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve(model: str | Path) -> Path:
    """A local folder as given, or the cached snapshot of a Hub repo id; never downloads.

    A name that is neither falls through unchanged, so the caller's "not a model folder"
    error (``ModelNotFoundError``) still names it.
    """
    path = Path(model).expanduser()
    if path.exists() or not looks_like_repo_id(str(model)):
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(model), local_files_only=True))
    except Exception:  # noqa: BLE001 -- not cached (LocalEntryNotFoundError), bad id (HFValidationError), ...
        return path
