"""Ingest: every input file ends up ingested, as a reported duplicate, or quarantined with a reason."""

import csv
import json
import shutil

import numpy as np
import pytest

from busgen.data import schema as S
from busgen.data.dataset import iter_torch_batches, load, read_arrays, read_table
from busgen.data.imageio import encode_png
from busgen.data.ingest import IngestConfig, ingest
from busgen.data.phantom import write_phantom


def read_quarantine(out):
    with open(out / S.QUARANTINE_CSV) as fh:
        return {r["source"]: r["reason"] for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def phantom_tree(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("src") / "phantom", 30, 48, seed=0)


def test_class_folder_tree_with_masks(ray_local, phantom_tree, tmp_path):
    summary = ingest(phantom_tree, tmp_path / "ds", IngestConfig(size=32))
    assert summary.n_ingested == 30 and summary.n_quarantined == 0 and summary.n_duplicates == 0
    table = read_table(tmp_path / "ds")
    assert set(table.column_names) >= set(S.INGEST_SCHEMA.names)
    rows = table.to_pylist()
    for r in rows:
        assert (r["mask"] is not None) == (r["label"] != "normal"), "masks are paired to their images"
        assert (r["box"] is not None) == (r["label"] != "normal")
        if r["box"]:
            x0, y0, x1, y1 = r["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert r["domain"] == "phantom" and r["orig_width"] == 48 and len(r["sha256"]) == 64
    info = json.loads((tmp_path / "ds" / S.DATASET_JSON).read_text())
    assert info["n_images"] == 30 and info["image_size"] == 32 and info["schema_version"] == S.SCHEMA_VERSION
    assert sum(sum(c.values()) for c in info["counts"].values()) == 30
    assert set(info["counts"]) == {"train", "val", "test"}, "no split given: stratified 70/15/15"
    assert info["counts"]["train"] == {"benign": 7, "malignant": 7, "normal": 7}


def test_busi_fixed_split_counts_and_label_conflict(ray_local, busi_dir, tmp_path):
    summary = ingest(busi_dir, tmp_path / "busi", IngestConfig(size=64))
    with open(busi_dir / "labels.csv") as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == 780
    quarantine = read_quarantine(tmp_path / "busi")
    # BUSI's one pixel-identical pair with different labels goes to quarantine as a label conflict.
    assert set(quarantine) == {"benign/benign (433).png", "malignant/malignant (145).png"}
    assert all(r.startswith("label conflict") for r in quarantine.values())
    assert summary.n_ingested == 780 - summary.n_duplicates - 2
    expected = {}
    for row in manifest:
        if row["path"] not in quarantine:
            expected.setdefault(row["split"], {}).setdefault(row["label"], 0)
            expected[row["split"]][row["label"]] += 1
    info = json.loads((tmp_path / "busi" / S.DATASET_JSON).read_text())
    assert info["counts"] == {s: dict(sorted(c.items())) for s, c in sorted(expected.items())}
    assert info["counts"]["train"] == {"benign": 305, "malignant": 147, "normal": 93}
    assert info["classes"] == ["benign", "malignant", "normal"]
    table = read_table(tmp_path / "busi", [S.LABEL, S.MASK, S.BOX])
    labels, masks, boxes = (table.column(c).to_pylist() for c in (S.LABEL, S.MASK, S.BOX))
    assert all(m is not None for m in masks), "every BUSI image has a (possibly empty) mask"
    assert all((b is not None) == (lbl != "normal") for lbl, b in zip(labels, boxes))


def test_bad_files_are_quarantined_and_good_files_kept(ray_local, phantom_tree, tmp_path):
    src = tmp_path / "tree"
    shutil.copytree(phantom_tree, src)
    good = sorted(p for p in src.rglob("*.png") if not p.stem.endswith("_mask"))
    (src / "benign" / "zero.png").write_bytes(b"")
    (src / "benign" / "text.png").write_text("this is not an image")
    (src / "malignant" / "truncated.png").write_bytes(good[0].read_bytes()[:60])
    (src / "malignant" / "notes.txt").write_text("clinical notes")
    (src / "benign" / "lonely_mask.png").write_bytes(encode_png(np.zeros((8, 8), np.uint8)))
    (src / "cyst").mkdir()
    (src / "cyst" / "c1.png").write_bytes(good[1].read_bytes()[::-1][:10] + good[2].read_bytes())  # corrupt too
    (src / "cyst" / "c2.png").write_bytes(encode_png(np.full((40, 40), 7, np.uint8)))
    shutil.copy(good[3], src / good[3].parent.name / "copy_of_good.png")  # exact duplicate, same label
    (src / "stray.png").write_bytes(good[4].read_bytes())  # outside a class folder

    summary = ingest(src, tmp_path / "ds", IngestConfig(size=32, classes=["benign", "malignant", "normal"]))
    q = read_quarantine(tmp_path / "ds")
    assert "empty" in q["benign/zero.png"]
    assert "not an image" in q["benign/text.png"]
    assert "truncated" in q["malignant/truncated.png"] or "corrupt" in q["malignant/truncated.png"]
    assert "not an image file" in q["malignant/notes.txt"]
    assert "mask without" in q["benign/lonely_mask.png"]
    assert "not in --classes" in q["cyst/c1.png"] and "not in --classes" in q["cyst/c2.png"]
    assert "class folder" in q["stray.png"]
    assert summary.n_ingested == len(good) and summary.n_duplicates == 1
    with open(tmp_path / "ds" / "duplicates.csv") as fh:
        dup = list(csv.DictReader(fh))
    assert len(dup) == 1 and {dup[0]["source"], dup[0]["duplicate_of"]} == {
        f"{good[3].parent.name}/copy_of_good.png",
        str(good[3].relative_to(src)),
    }


def test_csv_manifest_with_mask_split_domain_and_unlisted_files(ray_local, phantom_tree, tmp_path):
    src = tmp_path / "m"
    shutil.copytree(phantom_tree, src)
    images = sorted(p for p in src.rglob("*.png") if not p.stem.endswith("_mask"))
    listed = images[:10]
    with open(src / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "domain"])
        for i, p in enumerate(listed):
            w.writerow([p.relative_to(src), p.parent.name, "train" if i < 7 else "test", "site-x"])
        w.writerow(["benign/does_not_exist.png", "benign", "train", "site-x"])
    summary = ingest(src, tmp_path / "ds", IngestConfig(size=32))
    q = read_quarantine(tmp_path / "ds")
    assert summary.n_ingested == 10
    assert "missing" in q["benign/does_not_exist.png"]
    unlisted = {str(p.relative_to(src)) for p in images[10:]}
    assert unlisted <= set(q) and all("not listed" in q[u] for u in unlisted)
    table = read_table(tmp_path / "ds", [S.SPLIT, S.DOMAIN, S.MASK, S.LABEL])
    assert sorted(table.column(S.SPLIT).to_pylist()) == ["test"] * 3 + ["train"] * 7
    assert set(table.column(S.DOMAIN).to_pylist()) == {"site-x"}
    assert all(
        (m is not None) == (lbl != "normal")
        for m, lbl in zip(table.column(S.MASK).to_pylist(), table.column(S.LABEL).to_pylist())
    )


def write_dicom(path, arr16):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = arr16.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr16.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_files_with_csv_labels(ray_local, tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    ramp = (np.arange(40 * 60).reshape(40, 60) * 10).astype(np.uint16)  # 16-bit, 60 wide x 40 tall
    write_dicom(src / "a.dcm", ramp)
    write_dicom(src / "b.dcm", ramp[::-1].copy())
    (src / "labels.csv").write_text("path,label\na.dcm,benign\nb.dcm,malignant\n")
    summary = ingest(src / "labels.csv", tmp_path / "ds", IngestConfig(size=30, resize_mode="pad"))
    assert summary.n_ingested == 2
    images, labels, _, _ = read_arrays(tmp_path / "ds")
    assert images.shape == (2, 30, 30) and sorted(labels) == ["benign", "malignant"]
    table = read_table(tmp_path / "ds", [S.ORIG_WIDTH, S.ORIG_HEIGHT])
    assert table.column(S.ORIG_WIDTH).to_pylist() == [60, 60] and table.column(S.ORIG_HEIGHT).to_pylist() == [40, 40]
    # pad mode keeps the aspect ratio: 60x40 -> 30x20 centred, 5 rows of zero padding above and below
    img = images[labels.index("benign")]
    assert img[:5].max() == 0 and img[-5:].max() == 0 and img[5:25].max() > 200


def test_load_gives_ray_dataset_and_torch_batches(ray_local, phantom_tree, tmp_path):
    ingest(phantom_tree, tmp_path / "ds", IngestConfig(size=32))
    ds = load(tmp_path / "ds", split="train")
    assert ds.count() == 21
    classes = ["benign", "malignant", "normal"]
    seen = 0
    for x, y in iter_torch_batches(tmp_path / "ds", 10, classes):
        assert x.shape[1:] == (1, 32, 32) and x.dtype.is_floating_point
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert set(y.tolist()) <= {0, 1, 2}
        seen += len(y)
    assert seen == 30
