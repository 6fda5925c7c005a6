"""Upload guards: bound and decode client bytes before anything expensive happens.

Every failure maps to a 4xx ``RequestError`` naming the problem: 413 for bodies or
pixel counts over the limits (checked from headers before decoding), 415 for file
types other than PNG/JPEG/DICOM, 400 for corrupt bytes, 422 for implausible sides.
"""

from __future__ import annotations

import numpy as np
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import FormParser, parse_options_header

from busgen.data.dicom import check_dicom_header
from busgen.data.imageio import ImageDecodeError, decode_image
from busgen.data.ingest import read_any_image
from busgen.serve.config import LimitArgs
from busgen.serve.errors import RequestError

PNG_MAGIC, JPEG_MAGIC, DICOM_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"DICM"


async def read_body_limited(request, max_bytes: int) -> bytes:
    """Read a request body, refusing (413) anything over ``max_bytes`` without buffering it all.

    The declared Content-Length is checked first; the stream is counted too, since
    chunked uploads declare nothing.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise RequestError(413, f"request body too large: limit is {max_bytes} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise RequestError(413, f"request body too large: limit is {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def extract_upload(body: bytes, content_type: str | None) -> tuple[bytes, str]:
    """The first uploaded file of a multipart body (field ``file`` or the first file part), or the raw body."""
    return extract_uploads(body, content_type, 1 << 16)[0]


def extract_uploads(body: bytes, content_type: str | None, max_files: int) -> list[tuple[bytes, str]]:
    """The uploaded files of a multipart/form-data body (fields ``file``, else every file part), or the raw body.

    Returns:
        [(file bytes, client file name or "")], at least one.

    Raises:
        RequestError: 400 for a malformed body or no file part, 413 for more than ``max_files`` files.
    """
    if not (content_type or "").lower().startswith("multipart/form-data"):
        return [(body, "")]
    files = multipart_files(body, content_type)
    if not files:
        raise RequestError(400, "multipart body has no file part: send the image as form field 'file'")
    if len(files) > max_files:
        raise RequestError(413, f"{len(files)} files in one request: the limit is {max_files} (limits.max_n)")
    return files


def multipart_files(body: bytes, content_type: str) -> list[tuple[bytes, str]]:
    """The file parts of a multipart/form-data body: fields named ``file``, else every part with a file name.

    Parsed with python-multipart (the parser behind FastAPI's ``UploadFile``) over the body
    the ingress already read under its size limit, with every part kept in memory: the
    body is bounded, so no part can spill to a temporary file.
    """
    files: list = []
    fields: list = []  # a "file" field sent without a file name still counts as the upload
    config = {"MAX_MEMORY_FILE_SIZE": len(body) + 1, "MAX_BODY_SIZE": len(body) + 1}
    try:
        boundary = _boundary(content_type)
        parser = FormParser("multipart/form-data", fields.append, files.append, boundary=boundary, config=config)
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise RequestError(400, f"malformed multipart body ({type(exc).__name__})") from None
    parts = []
    for f in files:
        f.file_object.seek(0)
        name = (f.file_name or b"").decode("utf-8", "replace") if isinstance(f.file_name, bytes) else f.file_name
        parts.append(((f.field_name or b"") == b"file", (f.file_object.read(), name or "")))
    named = [part for is_file_field, part in parts if is_file_field]
    named += [(f.value or b"", "") for f in fields if f.field_name == b"file"]
    return named or [part for _, part in parts if part[1]]


def _boundary(content_type: str) -> bytes:
    """The ``boundary`` parameter of a multipart Content-Type header."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ValueError("missing or wrong boundary")
    return boundary


def check_upload_type(data: bytes, filename: str) -> None:
    """The ingress's cheap check (no decoding): 400 for an empty file, 415 for anything but PNG/JPEG/DICOM."""
    if not data:
        raise RequestError(400, "empty upload (0 bytes)")
    if not (is_dicom(data, filename) or data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)):
        raise RequestError(415, "unsupported file type: send a PNG, JPEG or DICOM image")


def is_dicom(data: bytes, filename: str) -> bool:
    return data[128:132] == DICOM_MAGIC or filename.lower().endswith((".dcm", ".dicom"))


def decode_upload(data: bytes, filename: str, limits: LimitArgs) -> np.ndarray:
    """Decode an uploaded PNG, JPEG or DICOM to uint8 (H, W), mapping every failure to a 4xx.

    415: not PNG/JPEG/DICOM; 400: corrupt or truncated; 413: too many pixels or a DICOM
    that decodes (or inflates) beyond ``limits.max_decoded_mb`` (checked before decoding);
    422: sides too small or too elongated.
    """
    check_upload_type(data, filename)
    try:
        if is_dicom(data, filename):
            check_dicom_size(data, limits)
            image = read_any_image(data, filename or "upload.dcm", limits.max_pixels, limits.max_decoded_bytes)
        else:
            image = decode_image(data, max_pixels=limits.max_pixels)
    except ImageDecodeError as exc:
        status = 413 if "too large" in str(exc) else 400
        raise RequestError(status, f"cannot decode image: {exc}") from None
    check_dimensions(image, limits)
    return image


def check_dicom_size(data: bytes, limits: LimitArgs) -> None:
    """The header-only pre-check of a DICOM upload, through the same capped reader as decoding.

    Transfer syntax, Rows x Columns x Frames against ``max_pixels`` and ``max_decoded_mb``,
    rescale values; a Deflated body is only counted against the cap, streamed, never held
    (pydicom's own reader would inflate it whole first).

    Raises:
        ImageDecodeError: a refused header ("too large" for the caps; the caller maps it to 413/400).
    """
    check_dicom_header(data, limits.max_pixels, limits.max_decoded_bytes)


def check_dimensions(image: np.ndarray, limits: LimitArgs) -> None:
    """422 for images too small or too elongated to be an ultrasound frame."""
    if image.ndim != 2:
        raise RequestError(422, f"expected a 2-D grayscale image, got shape {image.shape}")
    h, w = image.shape
    if min(h, w) < limits.min_side:
        raise RequestError(422, f"image {w}x{h} is too small: each side must be >= {limits.min_side} px")
    if max(h, w) / min(h, w) > limits.max_aspect:
        raise RequestError(422, f"image {w}x{h} is too elongated: aspect ratio must be <= {limits.max_aspect}")
