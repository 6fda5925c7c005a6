"""What a dataset may be used for: its licence and citation, read from the source folder's README.

A model trained on a dataset inherits that dataset's terms (BUSI is CC BY 4.0: attribution;
BUS-UCLM is CC BY-NC 4.0: attribution and no commercial use), so ``busgen ingest`` records
them in ``dataset.json`` (``datasets``: name, licence, citation) and training carries the
list into the model folder, where the model card states it (``busgen.model.card``).

The source README is prose written for people, so the reader is deliberately simple: in
the paragraph after a "Licence"/"License" label, the licence in bold if one is, else the
first one named; the "Citation" paragraph as written. ``ingest license=... citation=...``
overrides both when a README is missing or says something else.
"""

from __future__ import annotations

import re
from pathlib import Path

UNKNOWN = "unknown"
README = "README.md"

# (pattern, Hub licence id); most specific first: "CC BY-NC 4.0" also contains "CC BY".
_LICENCES = (
    (r"CC[ -]BY[ -]NC[ -]SA[ -]4\.0", "cc-by-nc-sa-4.0"),
    (r"CC[ -]BY[ -]NC[ -]ND[ -]4\.0", "cc-by-nc-nd-4.0"),
    (r"CC[ -]BY[ -]NC[ -]4\.0", "cc-by-nc-4.0"),
    (r"CC[ -]BY[ -]SA[ -]4\.0", "cc-by-sa-4.0"),
    (r"CC[ -]BY[ -]4\.0", "cc-by-4.0"),
    (r"CC0[ -]1\.0", "cc0-1.0"),
    (r"Apache[ -]2\.0", "apache-2.0"),
)
_LABEL = re.compile(r"(licen[cs]e|citation)\s*:?\s*\**\s*:?", re.IGNORECASE)


def licence_id(text: str) -> str | None:
    """The first licence ``text`` names, as a Hub licence id (``cc-by-nc-4.0``), or None."""
    found = [(m.start(), lid) for pattern, lid in _LICENCES for m in re.finditer(pattern, text, re.IGNORECASE)]
    if not found:
        return None
    first = min(pos for pos, _ in found)
    return next(lid for pattern, lid in _LICENCES if re.match(pattern, text[first:], re.IGNORECASE))


def display(licence: str) -> str:
    """``cc-by-nc-4.0`` -> ``CC BY-NC 4.0`` (how licences are written for people)."""
    parts = licence.split("-")
    if parts[0] == "cc" and len(parts) > 2:
        return f"CC {'-'.join(parts[1:-1]).upper()} {parts[-1]}"
    return licence.upper()


def non_commercial(licence: str) -> bool:
    return "-nc" in licence


def _paragraph(text: str, label: str) -> str:
    """The text after the first ``label:`` (bullet or bold) up to the next blank line or next bullet."""
    m = re.search(rf"^\s*(?:[-*]\s*)?\**{label}\**\s*:?\**\s*:?(.*)$", text, re.IGNORECASE | re.MULTILINE)
    if not m:
        return ""
    lines = [m.group(1)]
    for line in text[m.end() :].splitlines()[1:]:
        if not line.strip() or re.match(r"^\s*([-*]\s|#)", line) or _LABEL.match(line.strip("* ")):
            break
        lines.append(line)
    return " ".join(part.strip() for part in lines).strip()


def read_readme(folder: str | Path) -> dict:
    """``{"license": id or "unknown", "citation": text or ""}`` from ``folder/README.md`` (both empty without one)."""
    path = Path(folder) / README
    if not path.is_file():
        return {"license": UNKNOWN, "citation": ""}
    text = path.read_text(encoding="utf-8", errors="replace")
    para = _paragraph(text, r"Licen[cs]e")
    bold = " ".join(re.findall(r"\*\*([^*]+)\*\*", para))
    return {"license": licence_id(bold) or licence_id(para) or UNKNOWN, "citation": _paragraph(text, "Citation")}


def dataset_record(name: str, folder: str | Path, licence: str | None = None, citation: str | None = None) -> dict:
    """One entry of ``dataset.json``'s ``datasets``: the README's licence and citation unless given."""
    found = read_readme(folder) if Path(folder).is_dir() else {"license": UNKNOWN, "citation": ""}
    return {"name": name, "license": licence or found["license"], "citation": citation or found["citation"]}


def merge(*lists: list[dict]) -> list[dict]:
    """The datasets of several sources, each name once (first record wins), in order."""
    out: dict[str, dict] = {}
    for records in lists:
        for rec in records or []:
            out.setdefault(rec["name"], rec)
    return list(out.values())
