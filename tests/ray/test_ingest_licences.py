"""Ingest records each source's licence and citation in dataset.json; combining sets keeps every source's."""

from __future__ import annotations

import json

from busgen.data import schema as S
from busgen.data.combine import CombineConfig, combine
from busgen.data.ingest import IngestConfig, ingest
from busgen.data.phantom import write_phantom

NC_README = (
    "# Site B\n\n**Licence:** the official repo says **CC BY-NC 4.0**.\n\n**Citation:** B. Author, Site B (2025).\n"
)


def test_ingest_reads_the_readme_and_combine_keeps_both_sources(ray_local, tmp_path):
    site_a = write_phantom(tmp_path / "site_a", 12, 32, seed=0)
    site_b = write_phantom(tmp_path / "site_b", 12, 32, seed=1)
    (site_b / "README.md").write_text(NC_README)
    ingest(site_a, tmp_path / "a", IngestConfig(size=32))
    summary = ingest(site_b, tmp_path / "b", IngestConfig(size=32))
    assert summary.n_quarantined == 0  # the README is the source's description, not a stray file
    b = json.loads((tmp_path / "b" / S.DATASET_JSON).read_text())["datasets"]
    assert b == [{"name": "site_b", "license": "cc-by-nc-4.0", "citation": "B. Author, Site B (2025)."}]
    both = combine(CombineConfig(inputs=[str(tmp_path / "a"), str(tmp_path / "b")], out=str(tmp_path / "ab")))
    kept = [(d["name"], d["license"]) for d in both["datasets"]]
    assert kept == [("site_a", "apache-2.0"), ("site_b", "cc-by-nc-4.0")]


def test_an_explicit_licence_overrides_the_readme(ray_local, tmp_path):
    src = write_phantom(tmp_path / "src", 6, 32)
    ingest(src, tmp_path / "ds", IngestConfig(size=32, license="cc-by-4.0", citation="C. Author (2024)."))
    rec = json.loads((tmp_path / "ds" / S.DATASET_JSON).read_text())["datasets"][0]
    assert (rec["license"], rec["citation"]) == ("cc-by-4.0", "C. Author (2024).")
