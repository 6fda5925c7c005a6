"""Ingest of untrusted sources, file by file: what may be read, what is refused, bounded decoding.

The policy these tests pin down is documented in docs/security.md.
"""

import io
import os
import tracemalloc

import numpy as np
import pytest
from helpers.data import dicom_bytes
from helpers.files import png, tree_entries, write
from PIL import Image

from busgen.data.dicom import decode_dicom
from busgen.data.imageio import ImageDecodeError, decode_image
from busgen.data.ingest import IngestConfig, read_any_image
from busgen.data.ingest_file import process_task
from busgen.data.paths import FileRefusedError, read_regular_file
from busgen.data.sources import discover


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


def test_discovery_reasons_lose_the_paths_they_quote_when_redacting():
    from busgen.data.ingest import _redacted
    from busgen.data.paths import Redactor
    from busgen.data.sources import QuarantineEntry

    path = "/exports/Jane Doe 0042/IM_0001.dcm"
    entry = _redacted(QuarantineEntry(path, f"cannot read {path}: truncated"), Redactor(True))
    assert "Jane" not in entry.source and "Jane" not in entry.reason
    assert entry.reason == f"cannot read {entry.source}: truncated" and entry.source.endswith(".dcm")
