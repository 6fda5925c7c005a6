"""The one exception type that crosses from the serve library into HTTP answers.

Auth, guards and the registry raise it with the status a client should see; the
ingress turns it into ``{"detail": ...}``. Keeping it in its own module lets every
other serve module raise it without importing FastAPI or Ray.

Anything else that fails behind a route (a model folder that does not load, a bug)
carries text for the operator, often with server paths in it. ``server_failure``
logs that text with the request id and gives the client one sentence instead.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("busgen.serve")


class RequestError(Exception):
    """A client error with its HTTP status; the ingress turns it into ``{"detail": ...}``."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail

    def __reduce__(self):
        """Pickle with both arguments: raised in a replica, it must arrive whole at the ingress."""
        return (type(self), (self.status_code, self.detail))


def server_failure(status_code: int, what: str, request_id: str | None, exc: BaseException) -> RequestError:
    """Log ``exc`` in full under ``request_id``; return the one sanitised sentence the client gets.

    Args:
        status_code: what the client should see (503: this part is unavailable, 500: a bug).
        what: the failing part in client terms, e.g. "model 'base'" (never a path).
        request_id: the id the client got in ``X-Request-ID``, to match a complaint to the log line.
        exc: the server-side exception; its text stays in the log.
    """
    logger.error("request %s: %s failed: %s: %s", request_id, what, type(exc).__name__, exc)
    return RequestError(
        status_code,
        f"error: {what} failed on the server ({type(exc).__name__}); "
        f"ask the operator to look up request id {request_id} in the server log",
    )
