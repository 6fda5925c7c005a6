"""Files on disk for ingest tests: random PNG bytes, writing a file with its folders, reading the CSVs ingest writes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from busgen.data.imageio import encode_png


def png(seed: int, size: int = 24) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def tree_entries(root: Path) -> set[str]:
    """Every file, link, hidden entry or linked folder under ``root``, as ingest would name it."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink() or d.startswith("."):
                found.add(str((here / d).relative_to(root)))
                dirnames.remove(d)
        found |= {str((here / f).relative_to(root)) for f in filenames}
    return found
