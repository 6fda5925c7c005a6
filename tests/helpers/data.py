"""Build tiny Parquet datasets in the ingest layout for tests (no Ray needed).

Rows follow ``busgen.data.schema.INGEST_SCHEMA``: PNG-encoded images and masks, boxes
derived from masks with ``imageio.mask_to_box`` (null for empty masks), so tests
exercise the same decoding path as real ingested data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from busgen.data import schema
from busgen.data.imageio import encode_png, mask_to_box
from busgen.data.phantom import make_phantom_arrays


def write_parquet_dataset(
    out_dir: str | Path,
    images: np.ndarray,
    masks: np.ndarray | None,
    labels: Sequence[str],
    domains: Sequence[str] | str = "phantom",
    splits: Sequence[str] | str = "train",
    rows_per_file: int = 64,
) -> Path:
    """Write images (N,H,W uint8) with masks/labels/domains/splits as Parquet files under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(images)
    domains = [domains] * n if isinstance(domains, str) else list(domains)
    splits = [splits] * n if isinstance(splits, str) else list(splits)
    rows = []
    for i in range(n):
        mask = None if masks is None or not masks[i].any() else masks[i]
        png = encode_png(images[i])
        rows.append(
            {
                schema.IMAGE: png,
                schema.MASK: None if mask is None else encode_png(mask),
                schema.BOX: mask_to_box(mask),
                schema.LABEL: labels[i],
                schema.DOMAIN: domains[i],
                schema.SPLIT: splits[i],
                schema.SOURCE: f"test/{i:06d}.png",
                schema.SHA256: hashlib.sha256(png).hexdigest(),
                schema.ORIG_WIDTH: images.shape[2],
                schema.ORIG_HEIGHT: images.shape[1],
            }
        )
    for part, s in enumerate(range(0, n, rows_per_file)):
        table = pa.Table.from_pylist(rows[s : s + rows_per_file], schema=schema.INGEST_SCHEMA)
        pq.write_table(table, out / f"part-{part:05d}.parquet")
    return out


def images_by_index(out: str | Path) -> dict[int, bytes]:
    """A generated set's PNG bytes by row index: compares runs whatever their shard layout or row order."""
    from busgen.data.dataset import read_table

    table = read_table(out, [schema.INDEX, schema.IMAGE])
    return dict(zip(table.column(schema.INDEX).to_pylist(), table.column(schema.IMAGE).to_pylist()))


def write_phantom_dataset(
    out_dir: str | Path, n: int, size: int = 32, seed: int = 0, styles: Sequence[str] = ("a",)
) -> Path:
    """Phantom images split evenly over device ``styles`` (one domain per style), all in the train split."""
    from busgen.data.phantom import make_phantom_arrays

    per = [n // len(styles) + (1 if k < n % len(styles) else 0) for k in range(len(styles))]
    parts = [make_phantom_arrays(m, size, seed + k, style=st) for k, (m, st) in enumerate(zip(per, styles))]
    images = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    labels = [lab for p in parts for lab in p[2]]
    domains = [f"phantom_{st}" for m, st in zip(per, styles) for _ in range(m)]
    return write_parquet_dataset(out_dir, images, masks, labels, domains, "train")


# Patient tags every test DICOM carries, so privacy tests can check none reach an output.
DICOM_PATIENT_TAGS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-778899",
    "PatientBirthDate": "19700101",
    "OtherPatientIDs": "ALT-445566",
    "PatientAddress": "12 Elm Street",
    "InstitutionName": "St Example Hospital",
}


def dicom_bytes(
    arr: np.ndarray,
    *,
    slope: str | None = None,
    frames: int | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
) -> bytes:
    """A Secondary Capture DICOM of ``arr`` (uint8 or uint16, 2-D) with patient tags set.

    ``slope`` is written verbatim as RescaleSlope, even when invalid ("abc", "1\\2"):
    pydicom refuses to write such values, so a valid placeholder of the same length is
    replaced in the bytes. ``frames`` sets NumberOfFrames without adding pixel data (a
    header that lies). A Deflated ``transfer_syntax`` deflates the dataset body; a compressed
    one encapsulates the pixels (a real JPEG frame for JPEG baseline, raw bytes otherwise).
    """
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    for k, v in DICOM_PATIENT_TAGS.items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns = arr.shape
    bits = 8 * arr.dtype.itemsize
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    placeholder = None
    if slope is not None:
        placeholder = "9" * len(slope) if len(slope) > 1 else "9"
        ds.RescaleSlope = placeholder
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    if UID(transfer_syntax).is_compressed:  # encapsulated: a JPEG frame for JPEG baseline, raw bytes otherwise
        from PIL import Image

        jpeg = io.BytesIO()
        if transfer_syntax == "1.2.840.10008.1.2.4.50":
            Image.fromarray(arr.astype(np.uint8)).save(jpeg, format="JPEG", quality=95)
            ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = encapsulate([jpeg.getvalue() or ds.PixelData])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if placeholder is not None:
        padded = placeholder + " " * (len(placeholder) % 2)
        data = data.replace(padded.encode(), (slope + " " * (len(slope) % 2)).encode(), 1)
    return data


def write_lesion_task(out: Path) -> Path:
    """A new site (phantom device style b) with a new label set: lesion present / absent (adaptation tests)."""
    images, masks, labels = make_phantom_arrays(60, 32, seed=11, style="b")
    new_labels = ["lesion" if lbl != "normal" else "no_lesion" for lbl in labels]
    return write_parquet_dataset(out, images, masks, new_labels, domains="site_b")


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate (N, H, W) images with black fill (no wrap-around), like a re-framed copy."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out
