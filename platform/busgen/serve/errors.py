"""The one exception type that crosses from the serve library into HTTP answers.

Auth, guards and the registry raise it with the status a client should see; the
ingress turns it into ``{"detail": ...}``. Keeping it in its own module lets every
other serve module raise it without importing FastAPI or Ray.
"""

from __future__ import annotations


class RequestError(Exception):
    """A client error with its HTTP status; the ingress turns it into ``{"detail": ...}``."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail

    def __reduce__(self):
        """Pickle with both arguments: raised in a replica, it must arrive whole at the ingress."""
        return (type(self), (self.status_code, self.detail))
