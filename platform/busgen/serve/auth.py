"""Bearer-token auth: where the token comes from, and how a request's token is checked.

Only the token's sha256 travels into the Serve deployment config, so the plaintext
never sits in Serve's controller checkpoint. ``insecure_local`` turns auth off for
demos and is accepted only on a loopback bind address (``LOOPBACK_HOSTS``), checked by
``check_exposure`` wherever the app is built or its ingress starts. With auth off, a
request must also *name* a loopback host (``Host: 127.0.0.1:8000``): a web page on
another site can make a browser resolve its own name to 127.0.0.1 (DNS rebinding) and
then read the API as same-origin; such requests carry that site's name and get 421.
A request's client identity in the access log is the token's id (a digest prefix), never the token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from busgen.serve.config import ServeArgs
from busgen.serve.errors import RequestError

TOKEN_ENV = "BUSGEN_API_TOKEN"
TOKEN_FILE_ENV = "BUSGEN_API_TOKEN_FILE"
STUDY_OWNER_ENV = "BUSGEN_STUDY_OWNER_TOKEN"
STUDY_OWNER_HEADER = "x-study-owner-token"
MIN_TOKEN_CHARS = 16  # a guessable short token is worse than none: refuse it
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


ANONYMOUS = "anonymous"  # identity of requests when auth is off (insecure_local)


def check_exposure(token_sha256: str | None, host: str | None) -> None:
    """Refuse to serve without a token unless the HTTP server is bound to loopback.

    ``host`` is the HTTP proxy's bind address (None: not known yet, checked again when
    the ingress starts and can ask the Serve controller).

    Raises:
        ValueError: auth is off and the server listens on a non-loopback address.
    """
    if token_sha256 is None and host is not None and host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"refusing to serve without an API token on {host!r}: insecure_local is only allowed when HTTP is "
            f"bound to loopback {LOOPBACK_HOSTS}; set {TOKEN_ENV} (or token_file) and drop insecure_local"
        )


def token_id(digest: str | None) -> str:
    """The client identity logged per request: a short prefix of the token's sha256, never the token."""
    return f"token:{digest[:12]}" if digest else ANONYMOUS


def resolve_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The API token: explicit value, else $BUSGEN_API_TOKEN, else a token file (arg or $BUSGEN_API_TOKEN_FILE)."""
    token = token or os.environ.get(TOKEN_ENV)
    token_file = token_file or os.environ.get(TOKEN_FILE_ENV)
    if not token and token_file:
        token = Path(token_file).read_text().strip()
    return token or None


def token_digest(args: ServeArgs) -> str | None:
    """sha256 of the resolved token, or None in insecure_local mode.

    Raises:
        ValueError: no token (and not insecure_local), or a token too short to resist guessing.
    """
    if args.insecure_local:
        return None
    token = resolve_token(args.token, args.token_file)
    if not token:
        raise ValueError(
            f"no API token: set {TOKEN_ENV} or {TOKEN_FILE_ENV}, pass token_file=..., "
            "or pass insecure_local=True for a loopback-only demo"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"API token is too short ({len(token)} chars); use at least {MIN_TOKEN_CHARS}")
    return hashlib.sha256(token.encode()).hexdigest()


def host_name(host_header: str | None) -> str:
    """The name part of a ``Host`` header, lower case, without port or IPv6 brackets ("" when absent)."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_loopback_host(host_header: str | None) -> None:
    """With auth off, refuse (421) a request whose ``Host`` is not a loopback name: the DNS-rebinding guard.

    Raises:
        RequestError: 421 for any other (or no) Host.
    """
    if host_name(host_header) not in LOOPBACK_HOSTS:
        raise RequestError(
            421,
            "error: this server runs without auth (insecure_local) and answers only requests addressed to "
            f"{', '.join(LOOPBACK_HOSTS)}; open it as http://127.0.0.1:<port>, or run it with an API token",
        )


def study_owner_digest(args: ServeArgs) -> str | None:
    """sha256 of the reader-study owner's token (arg, token file, or $BUSGEN_STUDY_OWNER_TOKEN); None without one.

    Raises:
        ValueError: a token too short to resist guessing.
    """
    token = args.study_owner_token or os.environ.get(STUDY_OWNER_ENV)
    if not token and args.study_owner_token_file:
        token = Path(args.study_owner_token_file).read_text().strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"study owner token is too short ({len(token)} chars); use at least {MIN_TOKEN_CHARS}")
    return hashlib.sha256(token.encode()).hexdigest()


def is_study_owner(digest: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the study owner's token (constant time); False when no owner is configured."""
    if not digest or not presented:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).hexdigest(), digest)


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against a stored sha256 in constant time."""

    def __init__(self, digest: str | None):
        self.digest = digest  # None: auth disabled (insecure_local)

    def check(self, token: str | None, host_header: str | None = None) -> str:
        """Raise 401 unless ``token`` (the credentials after "Bearer ") matches; return the client identity.

        With auth off the request's ``Host`` must be loopback instead (421 otherwise; see ``check_loopback_host``).
        """
        if self.digest is None:
            check_loopback_host(host_header)
            return ANONYMOUS
        if not token:
            raise RequestError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        presented = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(presented, self.digest):
            raise RequestError(401, "invalid bearer token")
        return token_id(self.digest)
