"""Plumbing shared by the scripts under ``jobs/``: arguments, configs, paths, results, exit codes.

Every job is started the same way, locally or through ``ray job submit``::

    python jobs/<name>.py --config evals/suites/<suite>.yaml [key=value ...] [--results-fp results.json]

and ends the same way: one ``BUSGEN_JOB`` summary line on stdout, one results JSON
(timestamp, run id, params, metrics, status) when ``--results-fp`` is given, and exit
status 0 on success, 2 for a bad config and 1 for any other failure. CI and evals read
the results file and the exit status, never the logs.

Jobs run inside a Ray runtime_env ``working_dir``, which is unpacked into a different
folder on every node, so relative paths mean different things to the driver and to
workers. ``resolve_location`` therefore makes local paths absolute on the driver
(pass shared-filesystem paths on a real cluster) and leaves ``s3://``-style URIs alone;
``write_json`` and ``write_table`` reach either through pyarrow filesystems.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable, Sequence, TypeVar

# torch before anything can call ray.init: in a job driver attached to a running cluster,
# loading libtorch after Ray's core worker aborts the process ("Intel oneMKL FATAL ERROR:
# Cannot load libtorch_cpu.so"; measured with torch 2.13 CPU, ray 2.60). Trial and actor
# processes are unaffected; only the driver needs this ordering.
import torch  # noqa: F401  isort: skip
from pydantic import BaseModel

from busgen.core.config import ConfigError, load_config

T = TypeVar("T", bound=BaseModel)

SUMMARY_PREFIX = "BUSGEN_JOB"
EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--config FILE``, ``--results-fp FILE`` and trailing ``key=value`` overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config file (e.g. evals/suites/generate_small.yaml)")
    parser.add_argument("--results-fp", help="write a results JSON here (local path or s3:// URI)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides; dotted keys reach nested sections"
    )
    return parser.parse_args(argv)


def load_job_config(cls: type[T], args: argparse.Namespace) -> T:
    """The job's typed config: class defaults, then ``--config``, then overrides (unknown keys fail)."""
    return load_config(cls, args.config, args.overrides)


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_location(location: str) -> str:
    """Absolute local path, or the URI unchanged: every node must read the same thing the driver means."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def run_id() -> str:
    """The Ray job submission id when running under ``ray job submit``, else a fresh id."""
    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    return job_config.get("metadata", {}).get("job_submission_id") or f"local-{uuid.uuid4().hex[:12]}"


def _filesystem(location: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI such as ``s3://bucket/key``."""
    from pyarrow import fs

    if is_uri(location):
        return fs.FileSystem.from_uri(location)
    return fs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def write_bytes(location: str, data: bytes) -> None:
    """Write a small file to a local path or URI, creating parent folders where the filesystem has them."""
    filesystem, path = _filesystem(location)
    parent = path.rsplit("/", 1)[0]
    if parent:
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(data)


def write_json(location: str, record: dict) -> None:
    write_bytes(location, json.dumps(record, indent=2, default=str).encode())


def write_table(location: str, rows: list[dict]) -> None:
    """Write rows as CSV (``.csv``) or Parquet (anything else) to a local path or URI."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    buf = io.BytesIO()
    if location.endswith(".csv"):
        pacsv.write_csv(table, buf)
    else:
        pq.write_table(table, buf)
    write_bytes(location, buf.getvalue())


def summary_line(job: str, status: str, seconds: float, metrics: dict) -> str:
    """One grep-able line: ``BUSGEN_JOB generate status=ok seconds=12.3 images=64 ...``."""
    scalars = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if isinstance(v, (int, float, str)) and k != "summary"
    )
    return f"{SUMMARY_PREFIX} {job} status={status} seconds={seconds:.1f} {scalars}".rstrip()


def run_job(job: str, cls: type[T], main: Callable[[T], dict], argv: Sequence[str] | None = None) -> int:
    """Parse, run ``main(cfg) -> metrics``, print the summary line, write results; returns the exit status.

    Exceptions are caught here (and printed with their traceback) so that every failure
    still yields a summary line, a results file with ``status=failed`` and a non-zero exit.
    """
    args = parse_args(f"busgen job: {job}", argv)
    record = {
        "job": job,
        "run_id": run_id(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_file": args.config,
        "overrides": list(args.overrides),
        "params": None,
        "metrics": {},
    }
    t0 = time.time()
    try:
        cfg = load_job_config(cls, args)
        record["params"] = cfg.model_dump(mode="json")
        record["metrics"] = main(cfg)
        status, code = "ok", EXIT_OK
    except ConfigError as exc:
        print(f"{job}: bad config: {exc}", file=sys.stderr, flush=True)
        record["error"], status, code = str(exc), "bad_config", EXIT_BAD_CONFIG
    except Exception as exc:  # noqa: BLE001 -- a job reports every failure the same way
        traceback.print_exc()
        record["error"], status, code = f"{type(exc).__name__}: {exc}", "failed", EXIT_FAILED
    record["status"], record["seconds"] = status, round(time.time() - t0, 3)
    if args.results_fp:
        write_json(args.results_fp, record)
    print(summary_line(job, status, record["seconds"], record["metrics"]), flush=True)
    return code
