"""Console output from Ray Train workers: one line each, printed once."""

from __future__ import annotations

import sys


def log_line(text: str) -> None:
    """One progress line from a Train worker, shown once.

    Ray Train V2 patches ``print`` in workers to go through its logger *and* tee to the
    worker's replaced stdout, so every printed line reached the driver twice.
    """
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
