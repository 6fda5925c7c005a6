"""Discover what an ingest source holds: a list of image tasks plus what must be quarantined.

Three layouts are understood, checked in this order:

1. a CSV manifest file ``path,label[,mask][,split][,domain]`` (paths relative to the CSV);
2. a folder holding ``labels.csv``: read through that manifest, so fixed splits
   (e.g. ``shared/data/busi128``) are kept; image files the manifest does not list
   are reported in quarantine, never silently dropped;
3. a class-folder tree ``<class>/**/<stem>.png`` with BUSI-style ``<stem>_mask*.png``
   siblings (several mask files of one image are merged later).

DICOM files are ordinary entries of any layout; they are decoded by content.
Discovery touches only file names, never pixels, so it is cheap on millions of files.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$", re.IGNORECASE)
MANIFEST_NAME = "labels.csv"


class SourceError(ValueError):
    """The source cannot be ingested at all (missing, empty, malformed manifest)."""


@dataclass
class ImageTask:
    """One image to ingest, as discovered from file names and the manifest."""

    path: str  # absolute path of the image file
    source: str  # path relative to the source root (stable id in reports)
    label: str
    mask_paths: list[str] = field(default_factory=list)
    split: str | None = None
    domain: str | None = None


@dataclass
class QuarantineEntry:
    source: str
    reason: str
    label: str | None = None


@dataclass
class DiscoveredSource:
    tasks: list[ImageTask]
    quarantine: list[QuarantineEntry]
    layout: str  # "manifest" | "class-folders"
    root: Path


def is_mask_name(path: Path) -> bool:
    return MASK_RE.match(path.stem) is not None


def discover(src: str | Path) -> DiscoveredSource:
    """Find images, labels, masks and splits in ``src`` without reading pixels.

    Raises:
        SourceError: if the source is missing, empty or its manifest is malformed.
    """
    src = Path(src)
    if not src.exists():
        raise SourceError(
            f"ingest source {src} does not exist: pass a class-folder tree, a folder with labels.csv, or a CSV manifest"
        )
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise SourceError(f"ingest source {src} is a file but not a CSV manifest (path,label[,mask][,split])")
        return _discover_manifest(src, src.parent, report_unlisted=False)
    if (src / MANIFEST_NAME).is_file():
        return _discover_manifest(src / MANIFEST_NAME, src, report_unlisted=True)
    return _discover_class_folders(src)


def _list_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _mask_index(files: list[Path]) -> dict[tuple[Path, str], list[Path]]:
    """Map (folder, image stem) -> mask files named ``<stem>_mask*.ext`` in that folder or a sibling 'mask(s)' folder."""
    index: dict[tuple[Path, str], list[Path]] = {}
    for p in files:
        m = MASK_RE.match(p.stem)
        if m and p.suffix.lower() in IMAGE_EXTS:
            index.setdefault((p.parent, m.group("stem")), []).append(p)
    return index


def _find_masks(image: Path, index: dict[tuple[Path, str], list[Path]]) -> list[Path]:
    found = list(index.get((image.parent, image.stem), []))
    # yirutsai-style layout: <class>/images/x.png with <class>/mask/x_mask.png
    for sib in ("mask", "masks"):
        found += index.get((image.parent.parent / sib, image.stem), [])
    return sorted(found)


def _discover_class_folders(root: Path) -> DiscoveredSource:
    files = _list_files(root)
    if not files:
        raise SourceError(
            f"ingest source {root} is empty: expected <class>/<image>.png folders or a labels.csv manifest"
        )
    index = _mask_index(files)
    tasks, quarantine, used_masks = [], [], set()
    for p in files:
        rel = p.relative_to(root)
        if p.suffix.lower() not in IMAGE_EXTS:
            quarantine.append(QuarantineEntry(str(rel), f"not an image file (extension {p.suffix or 'none'})"))
            continue
        if is_mask_name(p):
            continue
        if len(rel.parts) < 2:
            quarantine.append(QuarantineEntry(str(rel), "image is not inside a class folder (<class>/<image>)"))
            continue
        masks = _find_masks(p, index)
        used_masks.update(masks)
        tasks.append(ImageTask(str(p), str(rel), rel.parts[0], [str(m) for m in masks]))
    quarantine += _orphan_masks(root, index, used_masks)
    if not tasks:
        raise SourceError(
            f"ingest source {root} holds no images in class folders (found {len(files)} files, none usable)"
        )
    return DiscoveredSource(tasks, quarantine, "class-folders", root)


def _orphan_masks(root: Path, index: dict, used: set[Path]) -> list[QuarantineEntry]:
    orphans = sorted(m for masks in index.values() for m in masks if m not in used)
    return [QuarantineEntry(str(m.relative_to(root)), "mask without a matching image") for m in orphans]


def _read_manifest_rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in cols or "label" not in cols:
            raise SourceError(
                f"manifest {manifest} needs columns 'path' and 'label' (found {cols}); optional: mask, split, domain"
            )
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise SourceError(f"manifest {manifest} has no rows")
    return rows


def _discover_manifest(manifest: Path, root: Path, report_unlisted: bool) -> DiscoveredSource:
    rows = _read_manifest_rows(manifest)
    files = _list_files(root)
    index = _mask_index(files)
    tasks, quarantine, listed = [], [], set()
    for row in rows:
        rel = row["path"]
        p = (root / rel).resolve()
        listed.add(p)
        if not p.is_file():
            quarantine.append(QuarantineEntry(rel, "file listed in the manifest is missing", row.get("label") or None))
            continue
        if not row.get("label"):
            quarantine.append(QuarantineEntry(rel, "manifest row has an empty label"))
            continue
        if row.get("mask"):
            masks = [str((root / m).resolve()) for m in row["mask"].split(";") if m]
        else:
            masks = [str(m.resolve()) for m in _find_masks(root / rel, index)]
        listed.update(Path(m) for m in masks)
        tasks.append(ImageTask(str(p), rel, row["label"], masks, row.get("split") or None, row.get("domain") or None))
    if report_unlisted:
        for p in files:
            rp = p.resolve()
            # Masks paired to listed images are in `listed` too; docs and side tables are not data.
            if rp in listed or p.suffix.lower() in {".csv", ".md", ".txt", ".json"}:
                continue
            quarantine.append(QuarantineEntry(str(p.relative_to(root)), f"not listed in {manifest.name}"))
    if not tasks:
        raise SourceError(f"manifest {manifest} lists no existing image files")
    return DiscoveredSource(tasks, quarantine, "manifest", root)
