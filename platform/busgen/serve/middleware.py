"""ASGI middleware of the ingress: one access-log line per request, with its request id and client identity,
and the security headers of every answer (CSP, X-Frame-Options, nosniff).

The request id is Ray Serve's own (the client's ``X-Request-ID`` when sent), which
Serve's proxy returns in the ``X-Request-ID`` response header, so a client can quote it.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
costs a task and a stream copy per request, which shows at hundreds of requests per
second. Handlers report through ``request.state`` (a dict in ``scope["state"]``):
``n`` (images), ``client`` (the token id set by auth) and ``error`` (the server-side
detail of a failure whose client answer was sanitised).
"""

from __future__ import annotations

import time

from busgen.serve.access_log import access_record, log_access, request_id_from

REQUEST_ID_HEADER = b"x-request-id"
# The playground (/ui) runs no inline script and loads nothing from elsewhere, so its policy can be
# strict: an injected <img onerror=...> could not run even if it reached the DOM. (FastAPI's /docs
# page needs inline script and a CDN, so the policy is sent with /ui answers only.)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [  # every answer
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
UI_HEADERS = [*SECURITY_HEADERS, (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]


def serve_request_id(headers: dict) -> str:
    """The id Ray Serve gave this request (the client's X-Request-ID, or its own), which its proxy echoes back."""
    try:
        from ray.serve.context import _get_serve_request_context

        rid = _get_serve_request_context().request_id
    except Exception:  # outside a Serve replica (unit tests): fall back to the header
        rid = None
    return rid[:128] if rid else request_id_from(headers.get(REQUEST_ID_HEADER, b"").decode("latin-1") or None)


class AccessLogMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        rid = serve_request_id(dict(scope.get("headers") or []))
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                extra = UI_HEADERS if scope["path"].startswith("/ui") else SECURITY_HEADERS
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log_access(
                access_record(
                    scope["method"],
                    scope["path"],
                    status[0],
                    started,
                    state.get("n"),
                    rid,
                    state.get("client"),
                    state.get("error"),
                )
            )
