"""Discover what an ingest source holds: image tasks, plus what is quarantined or a duplicate, and why.

Three layouts are understood, checked in this order:

1. a CSV manifest file ``path,label[,mask][,split][,domain]`` (paths relative to the CSV);
2. a folder holding ``labels.csv``: read through that manifest, so fixed splits
   (e.g. ``shared/data/busi128``) are kept; files the manifest does not list
   are reported in quarantine, never silently dropped;
3. a class-folder tree ``<class>/**/<stem>.png`` with BUSI-style ``<stem>_mask*.png``
   siblings (several mask files of one image are merged later).

DICOM files are ordinary entries of any layout; they are decoded by content.
Discovery touches only file names and metadata, never pixels, so it is cheap on
millions of files. What may be read at all (the source folder, no symlinks, no
special files) is ``busgen.data.paths``'s policy; labels must be safe folder names
(``schema.is_safe_label``). Every entry ends up as exactly one task, quarantine row
or duplicate row, so ``n_entries`` is what the final accounting must add up to.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from busgen.core.csvcells import printable
from busgen.data.dicom import DICOM_EXTS
from busgen.data.licences import README
from busgen.data.paths import PathPolicy, walk
from busgen.data.schema import SAFE_LABEL_RE, is_safe_label

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_EXTS}
DOC_EXTS = {".csv", ".md", ".txt", ".json"}  # side tables next to a manifest, not data
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
    error_type: str = ""  # exception class of a per-file failure; empty for policy decisions


@dataclass
class DuplicateEntry:
    source: str
    duplicate_of: str
    label: str
    kind: str  # "listed again" (same file, same label) | "identical pixels"


@dataclass
class DiscoveredSource:
    tasks: list[ImageTask]
    quarantine: list[QuarantineEntry]
    layout: str  # "manifest" | "class-folders"
    root: Path
    duplicates: list[DuplicateEntry] = field(default_factory=list)
    maybe_dicom: bool = False  # some file named in the outputs is .dcm/.dicom or has no extension

    @property
    def n_entries(self) -> int:
        """Files (or manifest rows) seen: each is exactly one task, quarantine row or duplicate."""
        return len(self.tasks) + len(self.quarantine) + len(self.duplicates)


def unsafe_label_reason(label: str, what: str = "label") -> str:
    return (
        f"unsafe {what} {printable(label[:80])!r}: {what}s become folder names and page text, so they must match "
        f"{SAFE_LABEL_RE.pattern} (letters, digits, _ . -; no path separators)"
    )


def maybe_dicom(files: list[str], refused: list[str]) -> bool:
    """Whether any file (by name) may be a DICOM: .dcm/.dicom, or no extension as PACS exports often have.

    ``refused`` entries may be folders, so only their DICOM extension counts.
    """
    return any(f.lower().endswith(DICOM_EXTS) or not Path(f).suffix for f in files) or any(
        r.lower().endswith(DICOM_EXTS) for r in refused
    )


def is_mask_name(path: Path) -> bool:
    return MASK_RE.match(path.stem) is not None


def discover(src: str | Path, allow_roots: Sequence[str] = ()) -> DiscoveredSource:
    """Find images, labels, masks and splits in ``src`` without reading pixels.

    Args:
        src: class-folder tree, folder with labels.csv, or CSV manifest.
        allow_roots: folders outside the manifest's folder that manifest paths may point into.

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
        return _discover_manifest(src, PathPolicy(src.parent, allow_roots), report_unlisted=False)
    manifest = src / MANIFEST_NAME
    if manifest.is_symlink():
        raise SourceError(f"{manifest} is a symbolic link: links are never followed; copy the manifest into {src}")
    if manifest.is_file():
        return _discover_manifest(manifest, PathPolicy(src, allow_roots), report_unlisted=True)
    return _discover_class_folders(PathPolicy(src).root)


def _mask_index(files: list[Path]) -> dict[tuple[Path, str], list[Path]]:
    """Map (folder, image stem) -> mask files ``<stem>_mask*.ext`` in that folder or a sibling 'mask(s)' folder."""
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


def _refused_entries(root: Path, refused: list[tuple[Path, str]]) -> list[QuarantineEntry]:
    return [QuarantineEntry(printable(str(p.relative_to(root))), reason) for p, reason in refused]


def _discover_class_folders(root: Path) -> DiscoveredSource:
    files, refused = walk(root)
    if not files and not refused:
        raise SourceError(
            f"ingest source {root} is empty: expected <class>/<image>.png folders or a labels.csv manifest"
        )
    index = _mask_index(files)
    tasks, used_masks = [], set()
    quarantine = _refused_entries(root, refused)
    for p in files:
        rel = p.relative_to(root)
        if rel.as_posix() == README:
            continue  # the source's own description (licence, citation: busgen.data.licences), not data
        if p.suffix.lower() not in IMAGE_EXTS:
            quarantine.append(QuarantineEntry(str(rel), f"not an image file (extension {p.suffix or 'none'})"))
            continue
        if is_mask_name(p):
            continue
        if len(rel.parts) < 2:
            quarantine.append(QuarantineEntry(str(rel), "image is not inside a class folder (<class>/<image>)"))
            continue
        label = rel.parts[0]
        if not is_safe_label(label):
            quarantine.append(QuarantineEntry(str(rel), unsafe_label_reason(label)))
            continue
        masks = _find_masks(p, index)
        used_masks.update(masks)
        tasks.append(ImageTask(str(p), str(rel), label, [str(m) for m in masks]))
    quarantine += _orphan_masks(root, index, used_masks)
    if not tasks:
        raise SourceError(
            f"ingest source {root} holds no images in class folders "
            f"(found {len(files) + len(refused)} entries, none usable)"
        )
    dicom = maybe_dicom([p.name for p in files], [p.name for p, _ in refused])
    return DiscoveredSource(tasks, quarantine, "class-folders", root, maybe_dicom=dicom)


def _orphan_masks(root: Path, index: dict, used: set[Path]) -> list[QuarantineEntry]:
    orphans = sorted(m for masks in index.values() for m in masks if m not in used)
    return [QuarantineEntry(str(m.relative_to(root)), "mask without a matching image") for m in orphans]


def _read_manifest_rows(manifest: Path) -> tuple[list[dict[str, str]], list[QuarantineEntry]]:
    """The manifest's rows, and one quarantine entry per row the CSV reader cannot parse.

    Cells are bounded by the csv module's field limit (128 KiB); a longer cell fails its
    own row only. Bytes that are not UTF-8 are kept as surrogate escapes, so such a path
    is refused by name (``check_listed``) instead of aborting the whole read.
    """
    rows, bad = [], []
    with open(manifest, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        try:
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        except csv.Error as exc:
            raise SourceError(f"manifest {manifest} has an unreadable header ({exc}): fix the first line") from None
        if "path" not in cols or "label" not in cols:
            raise SourceError(
                f"manifest {manifest} needs columns 'path' and 'label' (found {cols}); optional: mask, split, domain"
            )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a cell over the field limit: this row only
                reason = f"manifest row after line {reader.line_num} cannot be parsed ({exc}): fix or remove it"
                bad.append(QuarantineEntry(f"{manifest.name}: row after line {reader.line_num}", reason))
                continue
            rows.append({k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str) and k})
    if not rows:
        raise SourceError(f"manifest {manifest} has no rows")
    return rows, bad


@dataclass
class _Listed:
    """A manifest row that passed the path and label checks."""

    path: Path
    row: dict[str, str]
    masks: list[Path]


def _check_row(row: dict[str, str], policy: PathPolicy, index: dict) -> tuple[_Listed | None, Path | None, str]:
    """(accepted row, None, "") or (None, the readable path if any, the reason the row is refused)."""
    path, reason = policy.check_listed(row.get("path", ""))
    if reason:
        return None, None, reason
    label = row.get("label", "")
    if not label:
        return None, path, "manifest row has an empty label"
    if not is_safe_label(label):
        return None, path, unsafe_label_reason(label)
    if row.get("domain") and not is_safe_label(row["domain"]):
        return None, path, unsafe_label_reason(row["domain"], "domain")
    if not row.get("mask"):
        return _Listed(path, row, _find_masks(path, index)), None, ""
    masks = []
    listed_masks = [m for m in row["mask"].split(";") if m]
    for i, m in enumerate(listed_masks, 1):
        mask, why = policy.check_listed(m)
        if why:
            return None, path, f"mask {i} of {len(listed_masks)}: {why}"
        masks.append(mask)
    return _Listed(path, row, masks), None, ""


def _discover_manifest(manifest: Path, policy: PathPolicy, report_unlisted: bool) -> DiscoveredSource:
    rows, quarantine = _read_manifest_rows(manifest)
    root = policy.root
    files, refused = walk(root)
    index = _mask_index(files)
    by_path: dict[Path, list[_Listed]] = {}
    seen = {manifest.resolve()}  # files accounted for by a manifest row (so not "unlisted")
    for row in rows:
        listed, path, reason = _check_row(row, policy, index)
        if listed is None:
            label = printable(row["label"]) if row.get("label") else None
            quarantine.append(QuarantineEntry(printable(row.get("path", "")), reason, label))
            seen.update([path] if path else [])
        else:
            by_path.setdefault(listed.path, []).append(listed)
    tasks, duplicates = [], []
    for path, group in by_path.items():
        seen.add(path)
        labels = sorted({g.row["label"] for g in group})
        if len(labels) > 1:  # one file, several labels: none can be trusted
            quarantine += [
                QuarantineEntry(g.row["path"], f"label conflict: the file is listed as {labels}", g.row["label"])
                for g in group
            ]
            continue
        first = group[0]
        seen.update(first.masks)
        tasks.append(
            ImageTask(
                str(path),
                first.row["path"],
                first.row["label"],
                [str(m) for m in first.masks],
                first.row.get("split") or None,
                first.row.get("domain") or None,
            )
        )
        label = first.row["label"]
        duplicates += [DuplicateEntry(g.row["path"], first.row["path"], label, "listed again") for g in group[1:]]
    if report_unlisted:
        reported = {Path(q.source) for q in quarantine}
        for p in files:
            # Masks paired to listed images are in `seen` too; docs and side tables are not data.
            if p in seen or p.suffix.lower() in DOC_EXTS:
                continue
            quarantine.append(QuarantineEntry(str(p.relative_to(root)), f"not listed in {manifest.name}"))
        quarantine += [q for q in _refused_entries(root, refused) if Path(q.source) not in reported]
    if not tasks:
        raise SourceError(f"manifest {manifest} lists no existing image files inside {root}")
    named = [r.get("path", "") for r in rows] + ([p.name for p in files] if report_unlisted else [])
    dicom = maybe_dicom(named, [p.name for p, _ in refused] if report_unlisted else [])
    return DiscoveredSource(tasks, quarantine, "manifest", root, duplicates, dicom)
