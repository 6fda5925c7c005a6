"""Multi-site datasets: several ingested sites combine into one dataset that keeps each site's split."""

from __future__ import annotations

import csv

import pytest
from helpers.paths import REPO_ROOT

from busgen.data import schema as S
from busgen.data.dataset import read_table

SHARED_UCLM = REPO_ROOT.parent / "shared" / "data" / "busuclm128"


@pytest.mark.skipif(not (SHARED_UCLM / "labels.csv").exists(), reason=f"BUS-UCLM not found at {SHARED_UCLM}")
def test_ingest_keeps_the_bus_uclm_patient_split(tmp_path, ray_local):
    """Every BUS-UCLM image keeps its labels.csv split, so no patient crosses train/val/test."""
    from busgen.data.ingest import IngestConfig, ingest

    summary = ingest(SHARED_UCLM, tmp_path / "uclm", IngestConfig(size=32, domain="uclm_s2000"))
    assert summary.n_ingested >= 670  # 679 files; pixel-identical duplicates are recorded, not ingested
    with open(SHARED_UCLM / "labels.csv") as fh:
        expected = {row["path"]: row["split"] for row in csv.DictReader(fh)}
    with open(SHARED_UCLM / "metadata.csv") as fh:
        patient = {row["path"]: row["patient_id"] for row in csv.DictReader(fh)}
    table = read_table(tmp_path / "uclm", [S.SOURCE, S.SPLIT, S.DOMAIN])
    splits_of_patient: dict[str, set] = {}
    for source, split in zip(table.column(S.SOURCE).to_pylist(), table.column(S.SPLIT).to_pylist()):
        assert expected[source] == split, source
        splits_of_patient.setdefault(patient[source], set()).add(split)
    assert all(len(s) == 1 for s in splits_of_patient.values())
    assert set(table.column(S.DOMAIN).to_pylist()) == {"uclm_s2000"}
