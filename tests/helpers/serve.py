"""Serving test helpers: a free loopback port, readiness polling, one BUSGen app on a local Serve instance, and
the reference and gallery sets the playground serves."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from busgen.data import schema as S
from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from helpers.models import CLASSES

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


def write_reference(path: Path, n: int = 12, size: int = 32) -> Path:
    """An ingested-style set: phantom images with label, domain and source."""
    images, _, labels = make_phantom_arrays(n, size, seed=3)
    names = [CLASSES[k] if isinstance(k, (int, np.integer)) else str(k) for k in labels]
    table = pa.table(
        {
            S.IMAGE: [encode_png(im) for im in images],
            S.LABEL: names,
            S.DOMAIN: ["phantom"] * n,
            S.SOURCE: [f"phantom/{i:03d}.png" for i in range(n)],
        }
    )
    pq.write_table(table, path)
    return path


def write_gallery(folder: Path, n: int = 14, size: int = 32, first_seed: int = 0) -> Path:
    """A generated-style set in two shards with provenance columns (model id, seed, sampler); row i has seed
    ``first_seed + i`` (``busgen generate`` seeds run past 2^53, where JavaScript numbers round)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for shard, rows in enumerate([range(0, n // 2), range(n // 2, n)]):
        table = pa.table(
            {
                S.IMAGE: [encode_png(rng.integers(0, 256, (size, size), dtype=np.uint8)) for _ in rows],
                S.LABEL: [CLASSES[i % 2] for i in rows],
                S.DOMAIN: ["phantom" if i % 3 else "site-b" for i in rows],
                S.SEED: pa.array([first_seed + i for i in rows], pa.int64()),
                S.MODEL_ID: ["tiny-0001"] * len(rows),
                S.SAMPLER: ["ddim"] * len(rows),
            }
        )
        pq.write_table(table, folder / f"shard-{shard:05d}.parquet")
    (folder / "manifest.json").write_text("{}")  # what `busgen generate` writes beside the shards: skipped
    return folder
