"""JSON access log: one line per request on the ingress replica's stderr and optionally a file.

Its own logger (not Serve's) so each line stays one machine-readable JSON object
instead of being re-wrapped in Serve's text format.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

ACCESS_LOGGER = "busgen.serve.access"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is short and plain (it lands in logs), else a fresh one."""
    if header and _CLIENT_REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex[:16]


def configure_access_log(log_fp: str | None = None) -> logging.Logger:
    """One JSON line per request on stderr (the replica's log) and optionally a file; idempotent."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # Serve's own handlers would re-wrap the JSON in their text format
    wanted = [("stderr", lambda: logging.StreamHandler(sys.stderr))]
    if log_fp:
        wanted.append((log_fp, lambda: logging.FileHandler(log_fp)))
    have = {getattr(h, "busgen_key", None) for h in logger.handlers}
    for key, make in wanted:
        if key not in have:
            handler = make()
            handler.busgen_key = key
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
    return logger


def access_record(
    method: str,
    path: str,
    status: int,
    started: float,
    n: int | None = None,
    request_id: str | None = None,
    client: str | None = None,
    error: str | None = None,
) -> dict:
    """The fields of one access-log line; ``started`` is a ``time.perf_counter()`` value.

    ``client`` is the token id (``auth.token_id``) or "anonymous", never the token itself;
    ``request_id`` is echoed to the client in ``X-Request-ID`` to match complaints to lines.
    ``error`` (only when set) is the server-side detail of a failure the client saw as one sentence.
    """
    return {
        "ts": round(time.time(), 3),
        "request_id": request_id,
        "client": client,
        "method": method,
        "path": path,
        "status": int(status),
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
        "n": n,
    } | ({"error": error} if error else {})


def log_access(record: dict) -> None:
    logging.getLogger(ACCESS_LOGGER).info(json.dumps(record, separators=(",", ":")))
