"""Keep Ray's chatter out of a command's output; Ray's own logs still go to its session log folder.

A 2-minute ``busgen pretrain`` printed 117 lines of which 11 were ours: Ray Train's
``TrainingReport(...)`` lines, Ray Data's progress tables, the token-auth warning, a
``PlacementGroupCleaner`` traceback when another Ray instance runs, worker crash dumps. A
user then misses the one line that matters. Two places print that chatter on the driver:

* **Worker output forwarded to the driver** (``log_to_driver``). Ray copies every line of
  every worker's stdout/stderr to its log folder (``<session>/logs/worker-*.out|err``)
  *and* forwards it to the driver. We keep forwarding on (our training loop prints its
  progress from the rank-0 worker) but pass on only the project's lines
  (``is_project_line``), without Ray's ``(RayTrainWorker pid=...)`` prefix. Ray has no
  public per-line filter, so ``install_worker_filter`` swaps the handler Ray registers on
  its worker-stream dispatcher; if a future Ray renames it, nothing is filtered (the
  unit test notices).
* **Ray's Python loggers in the driver** (``ray``, ``ray.data``, ``ray.train``,
  ``ray.tune``). Their console handlers get a filter that lets only errors through;
  everything still reaches a file: Ray Data's own ``logs/ray-data/ray-data.log``, and for
  the rest ``logs/busgen-driver.log`` in the session folder (``attach_driver_log``).

``BUSGEN_RAY_LOGS=all`` turns both filters off (debugging Ray itself).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re

SHOW_ALL_ENV = "BUSGEN_RAY_LOGS"  # "all" = print Ray's output unfiltered
DRIVER_LOG = "busgen-driver.log"  # Ray's driver-side records, in <session>/logs/
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")
_HANDLER = "ray_print_logs"  # the name Ray 2.x gives its log-printing handler on the dispatcher

# A project line: our "[stage] ..." progress (a lowercase one-word tag then a space, e.g. "[pretrain] step 2/6"),
# or our "error:" / "warning:" lines. Ray's own "[dataset]: ..." hints and tqdm escapes do not match.
_PROJECT = re.compile(r"^(\[[a-z][\w.+-]*\] |error: |warning: )")


def show_all() -> bool:
    return os.environ.get(SHOW_ALL_ENV, "").lower() == "all"


def is_project_line(line: str) -> bool:
    """True for the lines the project itself prints; Ray's, torch's and tracebacks are False."""
    return bool(_PROJECT.match(line))


def project_lines(batch: dict) -> dict | None:
    """The worker-output ``batch`` (Ray's dict with ``lines``) cut to the project's lines; None when none are left."""
    lines = [line for line in batch.get("lines", []) if is_project_line(line)]
    return {**batch, "lines": lines} if lines else None


def install_worker_filter(dispatcher=None) -> bool:
    """Make the driver print only the project's lines of forwarded worker output; True when installed.

    ``dispatcher`` defaults to Ray's global worker-stream dispatcher (tests pass their own).
    """
    if show_all():
        return False
    if dispatcher is None:
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:  # pragma: no cover, a Ray without it: output stays unfiltered
            return False
    from ray._private.worker import print_to_stdstream

    def print_project_lines(batch: dict) -> None:
        kept = project_lines(batch)
        if kept is not None:
            print_to_stdstream(kept, ignore_prefix=True)  # our lines carry their own "[stage]" tag

    names = [name for name, _ in dispatcher.handlers]
    if _HANDLER not in names:
        return False
    dispatcher.remove_handler(_HANDLER)
    dispatcher.add_handler(_HANDLER, print_project_lines)
    return True


class _ErrorsOnly(logging.Filter):
    """Console filter: Ray's records below ERROR stay off the terminal (the log file has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class _DriverLog(logging.FileHandler):
    """``<session>/logs/busgen-driver.log``: Ray's driver-side records (our class, so it is found again)."""


# Ray's records before its session folder exists (the token-auth warning), until attach_driver_log writes them
_BUFFER = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)


def quiet_driver_console(loggers: tuple[str, ...] = RAY_LOGGERS) -> None:
    """Filter Ray's console handlers in this process to errors; keep every record for ``attach_driver_log``.

    Call before ``ray.init`` (its token-auth warning is logged during init) and again after
    (Ray Data configures its loggers when first used).
    """
    if show_all():
        return
    import ray.data  # noqa: F401 -- Ray and Ray Data configure their loggers (and console handlers) on import

    for name in loggers:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if _is_console(handler) and not any(isinstance(f, _ErrorsOnly) for f in handler.filters):
                handler.addFilter(_ErrorsOnly())
    root = logging.getLogger("ray")
    if _BUFFER not in root.handlers and not any(isinstance(h, _DriverLog) for h in root.handlers):
        _BUFFER.setTarget(None)
        root.addHandler(_BUFFER)


def attach_driver_log(session_dir: str) -> str | None:
    """Send Ray's driver-side records (those held so far included) to ``<session_dir>/logs/busgen-driver.log``."""
    if show_all():
        return None
    path = os.path.join(session_dir, "logs", DRIVER_LOG)
    root = logging.getLogger("ray")
    for old in [h for h in root.handlers if isinstance(h, _DriverLog)]:
        if old.baseFilename == os.path.abspath(path):
            return path
        root.removeHandler(old)  # an earlier session of this process
        old.close()
    handler = _DriverLog(path)
    handler.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(name)s -- %(message)s"))
    root.addHandler(handler)
    _BUFFER.setTarget(handler)
    _BUFFER.flush()
    root.removeHandler(_BUFFER)
    return path
