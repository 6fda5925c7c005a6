"""Ingest of untrusted sources: what may be read, what is refused, and that every file is accounted for.

The policy these tests pin down is documented in docs/security.md.
"""

import csv
import hashlib
import io
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_data import DICOM_PATIENT_TAGS, dicom_bytes
from PIL import Image

from busgen.data import schema as S
from busgen.data.dataset import read_table
from busgen.data.dicom import decode_dicom
from busgen.data.imageio import ImageDecodeError, decode_image, encode_png
from busgen.data.ingest import IngestConfig, ingest, read_any_image
from busgen.data.ingest_file import process_task
from busgen.data.paths import FileRefusedError, read_regular_file
from busgen.data.sources import discover


def png(seed: int, size: int = 24) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def outputs(out: Path) -> tuple[list[str], list[dict], list[dict]]:
    """(ingested sources, quarantine rows, duplicate rows) of an ingested dataset."""
    sources = read_table(out, [S.SOURCE]).column(S.SOURCE).to_pylist()
    return sources, read_csv(out / S.QUARANTINE_CSV), read_csv(out / S.DUPLICATES_CSV)


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


# ---------------------------------------------------------------------------
# Paths, labels, links and hidden files (discovery only: nothing is read)
# ---------------------------------------------------------------------------


def test_manifest_paths_outside_the_folder_are_refused_unless_allowed(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "outside"
    write(src / "benign" / "a.png", png(0))
    secret = write(outside / "secret.png", png(1))
    rows = ["benign/a.png,benign", "../../../../etc/passwd,benign", f"{secret},benign", "../outside/secret.png,benign"]
    (src / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")

    found = discover(src)
    assert [t.source for t in found.tasks] == ["benign/a.png"]
    reasons = {q.source: q.reason for q in found.quarantine}
    for listed in ("../../../../etc/passwd", str(secret), "../outside/secret.png"):
        assert reasons[listed].startswith("outside the source folder")

    allowed = discover(src, allow_roots=[str(outside)])
    assert {t.path for t in allowed.tasks} == {str((src / "benign" / "a.png").resolve()), str(secret.resolve())}
    assert allowed.duplicates[0].kind == "listed again", "both spellings of secret.png name one file"


def test_labels_must_be_safe_folder_names(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b", "c", "d"):
        write(src / "imgs" / f"{name}.png", png(ord(name)))
    (src / "labels.csv").write_text(
        "path,label\nimgs/a.png,../../escaped\nimgs/b.png,a/b\nimgs/c.png,.hidden\nimgs/d.png,benign-2.v1\n"
    )
    found = discover(src)
    assert [t.label for t in found.tasks] == ["benign-2.v1"]
    assert all(q.reason.startswith("unsafe label") for q in found.quarantine)
    assert len(found.quarantine) == 3

    tree = tmp_path / "tree"
    write(tree / "bad name" / "x.png", png(5))
    write(tree / "benign" / "y.png", png(6))
    found = discover(tree)
    assert [q.source for q in found.quarantine if q.reason.startswith("unsafe label")] == ["bad name/x.png"]


def test_symlinks_are_never_followed_and_hidden_or_special_entries_are_reported(tmp_path):
    outside = write(tmp_path / "outside" / "o.png", png(1))
    tree = tmp_path / "tree"
    write(tree / "benign" / "a.png", png(0))
    (tree / "benign" / "link_out.png").symlink_to(outside)
    (tree / "benign" / "link_in.png").symlink_to(tree / "benign" / "a.png")
    (tree / "malignant").symlink_to(outside.parent, target_is_directory=True)
    write(tree / "benign" / ".hidden.png", png(2))
    write(tree / "benign" / ".cache" / "c.png", png(3))
    os.mkfifo(tree / "benign" / "pipe.png")  # reading it would block a worker forever

    found = discover(tree)
    reasons = {q.source: q.reason for q in found.quarantine}
    assert [t.source for t in found.tasks] == ["benign/a.png"]
    assert reasons["benign/link_out.png"].startswith("symbolic link")
    assert reasons["benign/link_in.png"].startswith("symbolic link")
    assert reasons["malignant"].startswith("symbolic link to a folder")
    assert reasons["benign/.hidden.png"].startswith("hidden file")
    assert reasons["benign/.cache"].startswith("hidden folder")
    assert reasons["benign/pipe.png"].startswith("not a regular file")
    assert found.n_entries == len(tree_entries(tree))

    (tree / "labels.csv").write_text("path,label\nbenign/a.png,benign\nbenign/link_out.png,benign\n")
    reasons = {q.source: q.reason for q in discover(tree).quarantine}
    assert reasons["benign/link_out.png"].startswith("symbolic link")
    with pytest.raises(OSError):
        read_regular_file(tree / "benign" / "link_out.png", 2**20)  # O_NOFOLLOW at read time too
    with pytest.raises(FileRefusedError, match="too large"):
        read_regular_file(tree / "benign" / "a.png", 10)


# ---------------------------------------------------------------------------
# Bounded decoders
# ---------------------------------------------------------------------------


def test_dicom_with_bad_rescale_slope_is_a_decode_error_not_a_crash():
    arr = (np.arange(48 * 64).reshape(48, 64) * 7).astype(np.uint16)
    assert read_any_image(dicom_bytes(arr, slope="2"), "x.dcm").shape == (48, 64)
    with pytest.raises(ImageDecodeError, match="RescaleSlope .* not a number"):
        read_any_image(dicom_bytes(arr, slope="abc"), "x.dcm")
    with pytest.raises(ImageDecodeError, match="RescaleSlope has 2 values"):
        read_any_image(dicom_bytes(arr, slope="1\\2"), "x.dcm")


def test_dicom_header_and_transfer_syntax_are_checked_before_decoding():
    small = np.zeros((48, 64), np.uint16)
    with pytest.raises(ImageDecodeError, match="too large: DICOM declares 100000 frame"):
        decode_dicom(dicom_bytes(small, frames=100_000))
    with pytest.raises(ImageDecodeError, match="too large: DICOM frame 64x48 exceeds 1000 pixels"):
        decode_dicom(dicom_bytes(small), max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="JPEG-LS .* not supported"):
        decode_dicom(dicom_bytes(small, transfer_syntax="1.2.840.10008.1.2.4.80"))
    gray = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)
    jpeg = decode_dicom(dicom_bytes(gray, transfer_syntax="1.2.840.10008.1.2.4.50"))
    assert jpeg.shape == (48, 64) and np.abs(jpeg.astype(int) - gray).mean() < 2


def test_deflated_dicom_inflates_only_up_to_the_cap():
    bomb = dicom_bytes(np.zeros((1024, 1024), np.uint16), transfer_syntax="1.2.840.10008.1.2.1.99")
    assert len(bomb) < 10_000, "2 MiB of zeros deflate to a few KiB"
    with pytest.raises(ImageDecodeError, match="inflates beyond 1.0 MiB"):
        decode_dicom(bomb, max_decoded_bytes=2**20)
    assert decode_dicom(bomb, max_decoded_bytes=4 * 2**20).shape == (1024, 1024)


def peak_numpy_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_16_bit_frames_decode_as_integers_not_float64():
    frame = np.random.default_rng(0).integers(0, 4096, (2048, 2048)).astype(np.uint16)  # 8 MiB
    dcm = dicom_bytes(frame)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    # One float64 copy alone would be 32 MiB (4x the frame): the old path made two.
    assert peak_numpy_bytes(lambda: decode_dicom(dcm)) < 3 * frame.nbytes
    assert peak_numpy_bytes(lambda: decode_image(buf.getvalue())) < 3 * frame.nbytes
    out = decode_dicom(dcm)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_default_pixel_cap_fits_bus_images_and_is_below_pils_bomb_warning():
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")  # 25 MP: far beyond a BUS frame
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(buf.getvalue())
    assert IngestConfig().max_pixels <= Image.MAX_IMAGE_PIXELS // 4
    with pytest.raises(ValueError):
        IngestConfig(max_pixel=1)  # typo: unknown keys fail


def test_any_exception_of_one_file_becomes_an_error_row(tmp_path, monkeypatch):
    import busgen.data.ingest_file as ingest_file

    path = write(tmp_path / "a.png", png(0))

    def boom(*args, **kwargs):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(ingest_file, "read_any_image", boom)
    row = process_task(
        {"uid": 0, "path": str(path), "source": "a.png", "label": "benign"}, 16, "pad", "site", redact=True
    )
    assert row["error"] == "decoder bug" and row["error_type"] == "RuntimeError" and row["image"] is None


# ---------------------------------------------------------------------------
# Acceptance: whole ingests through Ray
# ---------------------------------------------------------------------------


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


def test_discovery_reasons_lose_the_paths_they_quote_when_redacting():
    from busgen.data.ingest import _redacted
    from busgen.data.paths import Redactor
    from busgen.data.sources import QuarantineEntry

    path = "/exports/Jane Doe 0042/IM_0001.dcm"
    entry = _redacted(QuarantineEntry(path, f"cannot read {path}: truncated"), Redactor(True))
    assert "Jane" not in entry.source and "Jane" not in entry.reason
    assert entry.reason == f"cannot read {entry.source}: truncated" and entry.source.endswith(".dcm")
