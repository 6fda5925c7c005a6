"""Which files an ingest may read, how it reads them, and how their paths are written out.

Manifests and folder trees come from others (see docs/security.md), so a path in
them is a request, not a permission:

- a manifest path is resolved against the manifest's folder and must stay inside it,
  or inside a folder the operator named in ``allow_roots``; it is refused before
  anything outside is opened;
- symbolic links are never followed, files and folders alike (a link out of the tree
  would read whatever it points at); the walk and the manifest check refuse them
  and the worker opens files with ``O_NOFOLLOW``;
- only regular files are read (a FIFO would block a worker forever), and no more
  than ``max_bytes`` of them;
- hidden entries (name starting with ``.``) found by a walk are reported, not read;
- so are names that are not valid UTF-8 (they cannot be stored in Parquet or CSV) and
  folders more than ``MAX_DEPTH`` levels down (a walk must not exhaust the stack).

Every refusal carries a reason that ends up in ``quarantine.csv``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

OUTSIDE = "outside the source folder (only the manifest's folder and allow_roots may be read)"
SYMLINK = "symbolic link, not followed (symlinks are never followed; copy the file into the tree)"
SYMLINK_DIR = "symbolic link to a folder, not followed (symlinks are never followed; copy the folder into the tree)"
HIDDEN_FILE = "hidden file (name starts with '.'), not ingested: rename it without the dot to ingest it"
HIDDEN_DIR = "hidden folder (name starts with '.'), not searched: rename it without the dot to ingest its files"
NOT_REGULAR = "not a regular file (device, FIFO or socket), not read"
MISSING = "file listed in the manifest is missing"
NOT_UTF8 = "name is not valid UTF-8 (shown with \\x escapes), not read: rename it to ingest it"
NOT_UTF8_DIR = "folder name is not valid UTF-8 (shown with \\x escapes), not searched: rename it to ingest its files"
MAX_DEPTH = 64  # folder levels below the source root; BUS datasets are 1-4 deep
TOO_DEEP = f"folder nested deeper than {MAX_DEPTH} levels, not searched: move its files higher up to ingest them"

_EXT_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


class FileRefusedError(ValueError):
    """A file the policy will not read (link, special file, over the size cap); the message says why."""


def is_within(path: Path, root: Path) -> bool:
    """Lexical containment of two normalised absolute paths (no filesystem access)."""
    return path == root or root in path.parents


@dataclass
class PathPolicy:
    """The folders an ingest may read: the source folder first, then explicit ``allow_roots``."""

    root: Path
    allow_roots: Sequence[str] = ()
    roots: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        # The operator chose the root and allow_roots, so links in *their* own paths are fine.
        self.root = Path(os.path.realpath(self.root))
        self.roots = [self.root] + [Path(os.path.realpath(r)) for r in self.allow_roots]

    def check_listed(self, listed: str) -> tuple[Path | None, str | None]:
        """Absolute path of a manifest entry, or (None, reason) when it may not be read.

        Containment is decided on the normalised text first, so a refused path is
        never opened or even looked up.
        """
        if not listed or "\x00" in listed:
            return None, "manifest row has an empty or invalid path"
        if not is_utf8(listed):
            return None, NOT_UTF8
        p = Path(listed)
        cand = Path(os.path.normpath(p if p.is_absolute() else self.root / p))
        if not any(is_within(cand, r) for r in self.roots):
            return None, OUTSIDE
        if os.path.realpath(cand) != str(cand):
            return None, SYMLINK  # the file or one of its folders is a link
        try:
            st = os.lstat(cand)
        except FileNotFoundError:
            return None, MISSING
        except OSError as exc:
            return None, f"cannot look up file: {type(exc).__name__}: {exc.strerror}"
        if not stat.S_ISREG(st.st_mode):
            return None, NOT_REGULAR if not stat.S_ISDIR(st.st_mode) else "is a folder, not an image file"
        return cand, None


def is_utf8(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (Python keeps them as surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Regular, visible files under ``root`` and every entry refused on the way, with its reason.

    Never follows symbolic links; a refused folder is one entry (its contents are not listed).
    Folders deeper than ``MAX_DEPTH`` below ``root`` are refused, so the walk's depth is bounded.
    """
    files: list[Path] = []
    refused: list[tuple[Path, str]] = []

    def on_error(err: OSError) -> None:
        refused.append((Path(err.filename), f"unreadable folder: {type(err).__name__}: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=on_error):
        here = Path(dirpath)
        too_deep = len(here.relative_to(root).parts) >= MAX_DEPTH
        keep = []
        for d in sorted(dirnames):
            if (here / d).is_symlink():
                refused.append((here / d, SYMLINK_DIR))
            elif d.startswith("."):
                refused.append((here / d, HIDDEN_DIR))
            elif not is_utf8(d):
                refused.append((here / d, NOT_UTF8_DIR))
            elif too_deep:
                refused.append((here / d, TOO_DEEP))
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            p = here / f
            try:
                mode = os.lstat(p).st_mode
            except OSError as exc:
                refused.append((p, f"cannot look up file: {type(exc).__name__}: {exc.strerror}"))
                continue
            if stat.S_ISLNK(mode):
                refused.append((p, SYMLINK))
            elif not stat.S_ISREG(mode):
                refused.append((p, NOT_REGULAR))
            elif f.startswith("."):
                refused.append((p, HIDDEN_FILE))
            elif not is_utf8(f):
                refused.append((p, NOT_UTF8))
            else:
                files.append(p)
    return sorted(files), sorted(refused)


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """Read a regular file without following a final symlink, refusing files over ``max_bytes``.

    Raises:
        FileRefusedError: not a regular file, or larger than ``max_bytes``.
        OSError: missing, unreadable, or a symlink (ELOOP from ``O_NOFOLLOW``).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileRefusedError(NOT_REGULAR)
        if st.st_size > max_bytes:
            raise FileRefusedError(f"file too large: {st.st_size / 2**20:.1f} MiB exceeds {max_bytes / 2**20:.0f} MiB")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise FileRefusedError(f"file too large: exceeds {max_bytes / 2**20:.0f} MiB")
    return data


class Redactor:
    """Replaces file paths (which often hold patient names) by a salted hash plus the extension.

    The salt is random per ingest run and never written, so names cannot be recovered
    or confirmed from the outputs by hashing guesses; the same path maps to the same id
    within one run, so duplicates and quarantine rows still refer to each other.
    """

    def __init__(self, enabled: bool, salt: bytes | None = None):
        self.enabled = enabled
        self._salt = salt if salt is not None else os.urandom(16)

    def __call__(self, source: str) -> str:
        if not self.enabled:
            return source
        ext = os.path.splitext(source)[1]
        ext = ext.lower() if _EXT_RE.match(ext) else ""
        return hashlib.sha256(self._salt + source.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ext

    def scrub(self, text: str, *paths: str) -> str:
        """``text`` with every given path replaced by its redacted form (for exception messages)."""
        if not self.enabled:
            return text
        for p in sorted((p for p in paths if p), key=len, reverse=True):
            text = text.replace(p, self(p))
        return text
