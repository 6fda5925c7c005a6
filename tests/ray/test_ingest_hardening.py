"""Ingest of untrusted sources as whole Ray Data runs: every file of a hostile tree is accounted for.

The policy these tests pin down is documented in docs/security.md.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from helpers.data import DICOM_PATIENT_TAGS, dicom_bytes
from helpers.files import png, read_csv, tree_entries, write

from busgen.data import schema as S
from busgen.data.dataset import read_table
from busgen.data.ingest import IngestConfig, ingest


def outputs(out: Path) -> tuple[list[str], list[dict], list[dict]]:
    """(ingested sources, quarantine rows, duplicate rows) of an ingested dataset."""
    sources = read_table(out, [S.SOURCE]).column(S.SOURCE).to_pylist()
    return sources, read_csv(out / S.QUARANTINE_CSV), read_csv(out / S.DUPLICATES_CSV)


def test_mixed_bad_tree_is_fully_accounted_for(ray_local, tmp_path):
    tree = tmp_path / "tree"
    for i in range(3):
        write(tree / "benign" / f"b{i}.png", png(i))
        write(tree / "malignant" / f"m{i}.png", png(10 + i))
    write(tree / "benign" / "zero.png", b"")
    write(tree / "benign" / "text.png", b"this is not an image")
    write(tree / "malignant" / "truncated.png", png(20)[:60])
    write(tree / "benign" / ".hidden.png", png(21))
    outside = write(tmp_path / "outside" / "o.png", png(22))
    (tree / "malignant" / "link.png").symlink_to(outside)

    summary = ingest(tree, tmp_path / "ds", IngestConfig(size=16))
    sources, quarantine, duplicates = outputs(tmp_path / "ds")
    valid = [f"benign/b{i}.png" for i in range(3)] + [f"malignant/m{i}.png" for i in range(3)]
    assert sorted(sources) == valid
    assert summary.n_ingested + summary.n_duplicates + summary.n_quarantined == summary.n_discovered == 11
    named = sources + [q["source"] for q in quarantine] + [d["source"] for d in duplicates]
    assert sorted(named) == sorted(tree_entries(tree)), "every file in, exactly once out"
    q = {r["source"]: r for r in quarantine}
    for bad in ("benign/zero.png", "benign/text.png", "malignant/truncated.png"):
        assert q[bad]["error_type"] == "ImageDecodeError"
    assert q["benign/.hidden.png"]["reason"].startswith("hidden file")
    assert q["malignant/link.png"]["reason"].startswith("symbolic link")


def test_hostile_manifest_reads_nothing_outside_and_records_duplicates(ray_local, tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        write(src / "img" / f"{i}.png", png(i))
    write(src / "img" / "x.png", png(9))
    secret = write(tmp_path / "outside" / "secret.png", png(5))
    rows = [
        "img/0.png,benign",
        "img/1.png,benign",
        "img/2.png,malignant",
        "../../../../etc/passwd,benign",
        f"{secret},malignant",
        "img/missing.png,benign",
        "img/x.png,../../escaped",
        "img/0.png,benign",
    ]
    (src / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")

    summary = ingest(src, tmp_path / "ds", IngestConfig(size=16, redact_paths=False))
    sources, quarantine, duplicates = outputs(tmp_path / "ds")
    assert sorted(sources) == ["img/0.png", "img/1.png", "img/2.png"]
    sha = read_table(tmp_path / "ds", [S.SHA256]).column(S.SHA256).to_pylist()
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in sha
    dup = {"source": "img/0.png", "duplicate_of": "img/0.png", "label": "benign", "kind": "listed again"}
    assert duplicates == [dup]
    q = {r["source"]: r["reason"] for r in quarantine}
    assert q["../../../../etc/passwd"].startswith("outside") and q[str(secret)].startswith("outside")
    assert q["img/missing.png"].startswith("file listed in the manifest is missing")
    assert q["img/x.png"].startswith("unsafe label")
    assert not (tmp_path / "escaped").exists()
    assert summary.n_discovered == len(rows) == summary.n_ingested + summary.n_duplicates + summary.n_quarantined


def test_dicom_folder_quarantines_bad_slopes_and_keeps_no_patient_data(ray_local, tmp_path):
    src = tmp_path / "Doe_Jane_1970"  # folder names of real exports often hold patient names
    ramp = (np.arange(40 * 60).reshape(40, 60) * 10).astype(np.uint16)
    write(src / "benign" / "Doe_Jane_good.dcm", dicom_bytes(ramp))
    write(src / "benign" / "Doe_Jane_text_slope.dcm", dicom_bytes(ramp[::-1].copy(), slope="abc"))
    write(src / "malignant" / "Doe_Jane_multi_slope.dcm", dicom_bytes(ramp[:, ::-1].copy(), slope="1\\2"))

    summary = ingest(src, tmp_path / "ds", IngestConfig(size=16))
    assert (summary.n_ingested, summary.n_quarantined, summary.redacted) == (1, 2, True)
    sources, quarantine, _ = outputs(tmp_path / "ds")
    assert all(len(s) == len("0123456789abcdef0123.dcm") and s.endswith(".dcm") for s in sources)
    assert {r["error_type"] for r in quarantine} == {"ImageDecodeError"}
    assert sorted("RescaleSlope" in r["reason"] for r in quarantine) == [True, True]
    info = json.loads((tmp_path / "ds" / S.DATASET_JSON).read_text())
    assert info["source"] == "<redacted>" and info["paths_redacted"] is True

    secrets = ["Doe", "Jane", *DICOM_PATIENT_TAGS.values()]
    for f in (tmp_path / "ds").rglob("*"):
        if not f.is_file():
            continue
        if f.suffix == ".parquet":  # every column but the PNG bytes, and the file's metadata
            table = pq.read_table(f)
            text = json.dumps(table.drop_columns([S.IMAGE, S.MASK]).to_pylist()) + str(table.schema.metadata)
        else:
            text = f.read_text()
        assert not [s for s in secrets if s in text], f"{f.name} leaks patient data"
