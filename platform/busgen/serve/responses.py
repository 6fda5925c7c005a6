"""Response formats of generated images: base64 JSON (default), one PNG, or a zip of PNGs.

Clients choose with ``Accept``: ``image/png`` for a single image, ``application/zip``
for several; anything else gets JSON. Binary answers carry what JSON would have said
(model id, seeds, sampler, ...) in ``X-BUSGen-*`` headers, so nothing is lost.
"""

from __future__ import annotations

import base64
import io
import zipfile

from busgen.serve.errors import RequestError

PNG, ZIP, JSON = "image/png", "application/zip", "application/json"


def negotiate(accept: str | None, n: int) -> str:
    """The media type to answer a generate request of ``n`` images with.

    Raises:
        RequestError: 406 for ``image/png`` with several images (one body holds one PNG).
    """
    wanted = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    if ZIP in wanted:
        return ZIP
    if PNG in wanted:
        if n != 1:
            raise RequestError(406, f"Accept: image/png holds one image, not {n}: ask for application/zip instead")
        return PNG
    return JSON


def zip_pngs(pngs: list[bytes], seeds: list[int]) -> bytes:
    """PNGs stored (not deflated: PNG is compressed already) as ``seed-<seed>.png``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for png, seed in zip(pngs, seeds):
            zf.writestr(f"seed-{seed}.png", png)
    return buf.getvalue()


def b64(pngs: list[bytes]) -> list[str]:
    return [base64.b64encode(p).decode("ascii") for p in pngs]


def provenance_headers(out: dict, model: str) -> dict[str, str]:
    return {
        "X-BUSGen-Model": model,
        "X-BUSGen-Model-Id": str(out["model_id"]),
        "X-BUSGen-Seeds": ",".join(map(str, out["seeds"])),
        "X-BUSGen-Sampler": str(out["sampler"]),
        "X-BUSGen-Steps": str(out["steps"]),
        "X-BUSGen-Guidance": str(out["guidance"]),
    }
