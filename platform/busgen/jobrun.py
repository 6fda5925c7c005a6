"""What every ``jobs/*.py`` entrypoint does: run one registered command as a Ray job.

Every job is started the same way, locally or through ``ray job submit``::

    python jobs/<name>.py --config platform/busgen/configs/<suite>.yaml [--option value ...] [key=value ...] \\
        [--results-fp results.json]

and ends the same way: one ``BUSGEN_JOB`` summary line on stdout, one results JSON
(timestamp, run id, params, metrics, status) when ``--results-fp`` is given (a local
path or an ``s3://`` URI), and exit status 0 on success, 2 for a bad config and 1 for
any other failure. CI and evals read the results file and the exit status, never the logs.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Sequence

from busgen.commands.registry import command
from busgen.core.cli_args import pop_option
from busgen.core.config import ConfigError
from busgen.core.raylocal import job_run_id
from busgen.core.storage import write_json

SUMMARY_PREFIX = "BUSGEN_JOB"
EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def summary_line(job: str, status: str, seconds: float, metrics: dict) -> str:
    """One grep-able line: ``BUSGEN_JOB generate status=ok seconds=12.3 images=64 ...``."""
    scalars = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if isinstance(v, (int, float, str)) and k != "summary" and "\n" not in str(v)
    )
    return f"{SUMMARY_PREFIX} {job} status={status} seconds={seconds:.1f} {scalars}".rstrip()


def run_job(name: str, argv: Sequence[str] | None = None) -> int:
    """Parse, run the command ``name``, print the summary line, write results; returns the exit status.

    Exceptions are caught here (and printed with their traceback) so that every failure
    still yields a summary line, a results file with ``status=failed`` and a non-zero exit.
    """
    # torch before anything can call ray.init: in a job driver attached to a running cluster, loading libtorch
    # after Ray's core worker aborts the process ("Cannot load libtorch_cpu.so"; torch 2.13 CPU, ray 2.60).
    import torch  # noqa: F401

    from busgen.core.cli_args import config_from_words

    op = command(name)
    words, results_fp = pop_option(list(sys.argv[1:] if argv is None else argv), "--results-fp")
    record = {
        "job": name,
        "run_id": job_run_id(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": words,
        "params": None,
        "metrics": {},
    }
    t0 = time.time()
    try:
        cfg, args = config_from_words(op.config_class, words, op.positional)
        record["config_file"], record["overrides"] = args.config, args.overrides
        record["params"] = cfg.model_dump(mode="json")
        record["metrics"] = op.run(cfg)
        status, code = "ok", EXIT_OK
    except ConfigError as exc:
        print(f"{name}: bad config: {exc}", file=sys.stderr, flush=True)
        record["error"], status, code = str(exc), "bad_config", EXIT_BAD_CONFIG
    except Exception as exc:  # noqa: BLE001 -- a job reports every failure the same way
        traceback.print_exc()
        record["error"], status, code = f"{type(exc).__name__}: {exc}", "failed", EXIT_FAILED
    record["status"], record["seconds"] = status, round(time.time() - t0, 3)
    if results_fp:
        write_json(results_fp, record)
    print(summary_line(name, status, record["seconds"], record["metrics"]), flush=True)
    return code
