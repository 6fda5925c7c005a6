"""Bounded DICOM decoding: check the header, then decode one frame as integers.

A DICOM file from elsewhere is untrusted: its header can declare 65535 x 65535
pixels x 1000 frames, a Deflated body can inflate a thousand-fold, an exotic
transfer syntax pulls in a native codec, and pydicom decodes every frame of a cine
loop. So, before any pixel is decoded:

1. the transfer syntax must be on an allow-list (uncompressed, Deflated, RLE,
   JPEG baseline); a Deflated body is inflated here, streamed, with a hard output cap
   (pydicom would inflate it whole): a first pass only counts the output, one chunk
   at a time, and refuses a body that would exceed the cap; only then is a buffer of
   exactly the counted size filled by a second pass, so nothing is copied at the end;
2. Rows x Columns must fit ``max_pixels`` and Rows x Columns x Frames x Samples x
   bytes per sample must fit ``max_decoded_bytes``;
3. RescaleSlope/Intercept must be single finite numbers (and the slope non-zero).

Then only the first frame is decoded, in its stored integer type (uint8/uint16).
Grayscale values go through pydicom's own ``apply_modality_lut`` (Modality LUT or
rescale) and ``apply_voi_lut`` (VOI LUT or window); 8-bit values in 0..255 are kept, others min-max scaled to uint8.
Those transforms map each stored value independently, so they run on a table of
every possible stored value (at most 65,536 entries) and the frame is looked up in it
once: no float copy of a large frame is ever made. Patient tags are never read or
returned. ``decode_dicom`` is the entry point for every stage (ingest, serving uploads);
``check_dicom_header`` is the cheap pre-check of serving uploads (header only, through
the same capped reader).
"""

from __future__ import annotations

import io
import math
import warnings
import zlib

import numpy as np

from busgen.data.imageio import MAX_PIXELS, ImageDecodeError, decode_image, scale_to_uint8

MAX_DECODED_BYTES = 512 * 2**20  # all frames of one DICOM as stored integers, and any Deflate output
DICOM_EXTS = (".dcm", ".dicom")
DICOM_MAGIC = b"DICM"

# Transfer syntaxes decoded without third-party native codecs (pydicom/numpy, or
# Pillow's JPEG decoder behind our own pixel cap). JPEG-LS, JPEG 2000 and 12-bit JPEG
# are refused: they need extra codecs that BUS scanners rarely require.
ALLOWED_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
}
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
INFLATE_IN_CHUNK = 64 * 1024  # compressed bytes fed to zlib at a time
INFLATE_OUT_CHUNK = 1 << 20  # most inflated bytes zlib may return per call: the counting pass's memory


def looks_like_dicom(data: bytes, name: str = "") -> bool:
    """DICOM by the ``DICM`` magic at offset 128 or by a .dcm/.dicom file name."""
    return data[128:132] == DICOM_MAGIC or name.lower().endswith(DICOM_EXTS)


def decode_dicom(data: bytes, max_pixels: int = MAX_PIXELS, max_decoded_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """Decode the first frame of a DICOM to a 2-D uint8 grayscale array, within the caps.

    Raises:
        ImageDecodeError: unreadable file, refused transfer syntax, malformed or
            out-of-range header values, or a frame/file over the caps ("too large").
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns per invalid value; the error below says what matters
        ds = _read(data, max_decoded_bytes)
        frames = _check_header(ds, max_pixels, max_decoded_bytes)
        slope = _check_rescale(ds)
        photometric = _photometric(ds)
        out = _first_frame(ds, frames, max_pixels, slope)
    return 255 - out if photometric == "MONOCHROME1" else out  # MONOCHROME1: the lowest value is white


def check_dicom_header(data: bytes, max_pixels: int = MAX_PIXELS, max_decoded_bytes: int = MAX_DECODED_BYTES) -> None:
    """Check a DICOM's transfer syntax, size caps and header from its header alone, without decoding pixels.

    A Deflated body is only counted (streamed, ~1 MiB at a time) against ``max_decoded_bytes``
    here, never held; the frame dimensions of a Deflated file are checked by ``decode_dicom``
    once the body is known to fit, before any pixel is decoded.

    Raises:
        ImageDecodeError: as ``decode_dicom`` ("too large" in the message for the caps).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _read(data, max_decoded_bytes, header_only=True)
        if ds is not None:
            _check_header(ds, max_pixels, max_decoded_bytes, need_pixels=False)
            _check_rescale(ds)


def _read(data: bytes, max_decoded_bytes: int, header_only: bool = False):
    """The parsed dataset (all of it, or up to the pixels with ``header_only``).

    With ``header_only`` a Deflated file is counted against the cap and None is returned:
    its header lies inside the deflated stream.
    """
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        fp = io.BytesIO(data)
        read_preamble(fp, force=True)
        meta = _read_file_meta_info(fp)
        ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
        if ts and ts not in ALLOWED_TRANSFER_SYNTAXES:
            name = UID(ts).name if UID(ts).is_valid else "unknown"
            raise ImageDecodeError(
                f"DICOM transfer syntax {ts} ({name}) is not supported: "
                f"re-export as uncompressed, Deflated, RLE or JPEG baseline"
            )
        if ts == DEFLATED:
            body = memoryview(data)[fp.tell() :]
            if header_only:
                inflated_size(body, max_decoded_bytes)
                return None
            inflated = _inflate(body, max_decoded_bytes)
            ds = pydicom.dcmread(_BufferReader(inflated), force=True)  # BytesIO would copy the buffer
            del inflated  # the dataset holds its own copies of the element values
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
        else:
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=header_only)
        if not ts:  # no file meta: use the encoding pydicom guessed
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
            if little is False:
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    except ImageDecodeError:
        raise
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise ImageDecodeError(f"unreadable DICOM: {type(exc).__name__}: {str(exc)[:200]}") from None
    return ds


class _BufferReader(io.RawIOBase):
    """A read-only, seekable file over a buffer, without copying it (``io.BytesIO`` copies a bytearray)."""

    def __init__(self, buf):
        super().__init__()
        self._view, self._pos = memoryview(buf), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """One copy of the bytes asked for (RawIOBase.read would copy twice)."""
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        out = bytes(self._view[self._pos : end])
        self._pos = max(self._pos, end)
        return out

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self._view) - self._pos))
        b[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _inflate_chunks(body, cap: int):
    """Raw-inflate ``body`` in pieces of at most ``INFLATE_OUT_CHUNK`` bytes, refusing output beyond ``cap``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    produced = 0
    view = memoryview(body)
    try:
        for i in range(0, len(view), INFLATE_IN_CHUNK):
            pending = view[i : i + INFLATE_IN_CHUNK]
            while len(pending) and not inflater.eof:
                piece = inflater.decompress(pending, INFLATE_OUT_CHUNK)
                pending = inflater.unconsumed_tail
                produced += len(piece)
                if produced > cap:
                    raise ImageDecodeError(f"image too large: Deflated DICOM inflates beyond {cap / 2**20:.1f} MiB")
                yield piece
            if inflater.eof:
                break
        piece = inflater.flush()
    except zlib.error as exc:
        raise ImageDecodeError(f"corrupt Deflated DICOM: {exc}") from None
    if produced + len(piece) > cap:
        raise ImageDecodeError(f"image too large: Deflated DICOM inflates beyond {cap / 2**20:.1f} MiB")
    yield piece


def inflated_size(body, cap: int) -> int:
    """Bytes ``body`` inflates to, counted one chunk at a time (memory: one chunk); refused beyond ``cap``."""
    return sum(len(piece) for piece in _inflate_chunks(body, cap))


def _inflate(body, cap: int) -> bytearray:
    """Raw-inflate ``body`` into a buffer of exactly its inflated size, at most ``cap`` bytes.

    Two passes: count (refusing beyond the cap with one chunk in memory), then fill a
    buffer of the counted size. Peak: the inflated size plus one chunk, never a copy.
    """
    out = bytearray(inflated_size(body, cap))
    pos = 0
    for piece in _inflate_chunks(body, len(out)):
        out[pos : pos + len(piece)] = piece
        pos += len(piece)
    return out


def _single_number(ds, keyword: str, default: float) -> float:
    """A header value that must be one finite number (multi-valued or text values are refused)."""
    if keyword not in ds:
        return default
    try:
        value = ds[keyword].value
    except Exception:  # lazy conversion of an invalid DS/IS raises here
        raise ImageDecodeError(f"DICOM {keyword} is not a number") from None
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        raise ImageDecodeError(f"DICOM {keyword} has {len(value)} values; an image needs exactly one number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImageDecodeError(f"DICOM {keyword} {str(value)[:32]!r} is not a number") from None
    if not math.isfinite(number):
        raise ImageDecodeError(f"DICOM {keyword} is not finite ({number})")
    return number


def _header_int(ds, keyword: str, default: int | None = None, lo: int = 0, hi: int = 2**31) -> int:
    if keyword not in ds and default is not None:
        return default
    if keyword not in ds:
        raise ImageDecodeError(f"DICOM has no {keyword}: not an image")
    number = _single_number(ds, keyword, float(default if default is not None else -1))
    if not number.is_integer() or not lo <= number <= hi:
        raise ImageDecodeError(f"DICOM {keyword} {number:g} is out of range ({lo}..{hi})")
    return int(number)


def _check_header(ds, max_pixels: int, max_decoded_bytes: int, need_pixels: bool = True) -> int:
    """Refuse frames and files over the caps from the header alone; returns the frame count."""
    if need_pixels and "PixelData" not in ds:
        raise ImageDecodeError("DICOM holds no PixelData: not an image")
    rows, cols = _header_int(ds, "Rows", lo=1, hi=65535), _header_int(ds, "Columns", lo=1, hi=65535)
    frames = max(1, _header_int(ds, "NumberOfFrames", 1, hi=2**31))
    samples = _header_int(ds, "SamplesPerPixel", 1, lo=1, hi=4)
    bits = _header_int(ds, "BitsAllocated", 8, lo=1, hi=32)
    if rows * cols > max_pixels:
        raise ImageDecodeError(f"image too large: DICOM frame {cols}x{rows} exceeds {max_pixels} pixels")
    total = rows * cols * frames * samples * math.ceil(bits / 8)
    if total > max_decoded_bytes:
        raise ImageDecodeError(
            f"image too large: DICOM declares {frames} frame(s) of {cols}x{rows}x{samples} at {bits} bits "
            f"({total / 2**20:.0f} MiB), over the {max_decoded_bytes / 2**20:.1f} MiB cap"
        )
    return frames


def _check_rescale(ds) -> float:
    """Quarantine unusable RescaleSlope/Intercept values; complete a half-given pair; returns the slope.

    pydicom would raise on text or several values and rescale nothing when only one of
    the pair is present; DICOM defines the missing one as slope 1 / intercept 0.
    """
    slope = _single_number(ds, "RescaleSlope", 1.0)
    _single_number(ds, "RescaleIntercept", 0.0)
    if slope == 0:
        raise ImageDecodeError("DICOM RescaleSlope is 0: every pixel would have the same value")
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        if "RescaleSlope" not in ds or ds.RescaleSlope in (None, ""):
            ds.RescaleSlope = "1"
        if "RescaleIntercept" not in ds or ds.RescaleIntercept in (None, ""):
            ds.RescaleIntercept = "0"
    return slope


def _photometric(ds) -> str:
    try:
        return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    except Exception:
        raise ImageDecodeError("DICOM PhotometricInterpretation is unreadable") from None


def _first_frame(ds, frames: int, max_pixels: int, slope: float) -> np.ndarray:
    """Frame 0 as uint8 grayscale; other frames of a cine loop are never decoded."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    try:
        if ts == JPEG_BASELINE:
            from pydicom.encaps import get_frame

            # Our own PIL path checks the JPEG's own dimensions against the cap before decoding.
            # An 8-bit JPEG capture is display-ready: kept as decoded, inverted by a negative slope.
            out = decode_image(get_frame(ds.PixelData, 0, number_of_frames=frames), max_pixels)
            return 255 - out if slope < 0 else out
        from pydicom.pixels import pixel_array

        arr = pixel_array(ds, index=0)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"unreadable DICOM pixel data: {type(exc).__name__}: {str(exc)[:200]}") from None
    if arr.ndim == 3:  # (rows, cols, samples): RGB/YBR capture -> luma
        if arr.dtype == np.uint8 and arr.shape[-1] >= 3:
            from PIL import Image

            return np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("L"), dtype=np.uint8)
        arr = arr[..., :3].mean(axis=-1, dtype=np.float32)
    if arr.ndim != 2:
        raise ImageDecodeError(f"DICOM frame has unexpected shape {arr.shape}")
    if _photometric(ds) not in ("", "MONOCHROME1", "MONOCHROME2"):
        return scale_to_uint8(arr)  # palette indices or a colour plane: the LUTs do not apply
    return grayscale_to_uint8(arr, ds)


def grayscale_to_uint8(arr: np.ndarray, ds) -> np.ndarray:
    """Stored grayscale values -> Modality LUT/rescale -> VOI LUT/window (pydicom) -> uint8.

    8-bit frames whose transformed values stay in 0..255 keep them as they are (no stretch: an 8-bit
    ultrasound capture is display-ready, and stretching made the same pixels score differently as DICOM
    than as PNG). Other 8/16-bit frames go through a table of every stored bit pattern (the transforms are
    per-value), min-max scaled over the values the frame actually holds; other frames
    (32-bit or float pixel data) are transformed whole.

    Raises:
        ImageDecodeError: a Modality/VOI LUT or window that pydicom cannot apply.
    """
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2:
        return scale_to_uint8(_value_transforms(arr, ds))
    if arr.dtype == np.uint8:  # 8-bit is display range already: the same pixels as a PNG give the same image
        values = np.asarray(_value_transforms(np.arange(256, dtype=np.uint8), ds), dtype=np.float64)
        if np.isfinite(values).all() and values.min() >= 0 and values.max() <= 255:
            return np.round(values).astype(np.uint8)[arr]
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    index = arr.view(f"u{arr.dtype.itemsize}")
    used = np.zeros(2 ** (8 * arr.dtype.itemsize), dtype=bool)
    used[index] = True
    values = _value_transforms(np.arange(used.size, dtype=index.dtype).view(arr.dtype), ds)
    return _min_max_table(np.asarray(values), used)[index]


def _value_transforms(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        return apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0)
    except Exception as exc:  # malformed LUT descriptors, windows of width < 1, unknown VOI functions
        raise ImageDecodeError(
            f"DICOM value transform failed ({type(exc).__name__}: {str(exc)[:160]}): "
            "fix or remove the Modality LUT, VOI LUT or window tags"
        ) from None


def _min_max_table(values: np.ndarray, used: np.ndarray) -> np.ndarray:
    """uint8 of each table entry, min-max scaled over the entries in use (float32, as imageio.scale_to_uint8)."""
    values = values.astype(np.float32)
    if not np.isfinite(values[used]).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = values[used].min(), values[used].max()
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    out = (values - lo) * np.float32(255.0 / (float(hi) - float(lo))) + np.float32(0.5)
    return np.clip(out, 0, 255).astype(np.uint8)
