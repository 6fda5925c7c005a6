"""Shared helpers of the benchmarks: peak RSS, subprocess runs, the headline line."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

RESULT_PREFIX = "BENCH_RESULT "


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_isolated(module_path: str, *args: str, timeout: int = 600) -> dict:
    """Run ``python module_path args...`` in a fresh process and parse the JSON it prints last.

    A fresh process per measurement keeps peak-RSS figures independent of each other.
    """
    out = subprocess.run([sys.executable, module_path, *args], capture_output=True, text=True, timeout=timeout)
    results = [line[len(RESULT_PREFIX) :] for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not results:
        raise RuntimeError(f"{module_path} {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(results[-1])


def emit_result(result: dict) -> None:
    """Child side of ``run_isolated``: print the result on a marked line (Ray may print too)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def headline(name: str, ratio: float, details: str) -> None:
    print(f"{name} ratio={ratio:.2f} ({details})", flush=True)
