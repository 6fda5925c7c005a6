"""Serving test helpers: a free loopback port, readiness polling, and one BUSGen app on a local Serve instance."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=30).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/readyz not ready after {timeout_s} s")


@contextmanager
def serving(args) -> Iterator[str]:
    """Build the app for ``args`` (a ServeArgs), serve it on 127.0.0.1, yield its URL once ready; shut down after."""
    from ray import serve

    from busgen.serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": LOOPBACK, "port": port})
    try:
        serve.run(build_app(args), name="busgen", route_prefix="/")
        url = f"http://{LOOPBACK}:{port}"
        wait_ready(url)
        yield url
    finally:
        serve.shutdown()
