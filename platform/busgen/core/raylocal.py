"""Start or attach to Ray so that all traffic stays on loopback on a single machine.

Ray otherwise advertises the machine's external address. On a cluster
(``RAY_ADDRESS`` set, or inside ``ray job submit``) we attach and change nothing.
"""

from __future__ import annotations

import os

from busgen.core import raylogs

LOOPBACK = "127.0.0.1"


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None, quiet: bool = False, **kwargs) -> None:
    """Initialise Ray once per process: attach to a cluster if one is given, else start a local one on 127.0.0.1.

    Args:
        num_cpus: logical CPUs for a local runtime (default: all cores). Over-subscribing
            logical CPUs is how 2-core machines avoid Ray Data actor/task deadlocks.
        object_store_mb: object store size for a local runtime.
        quiet: do not forward worker output to the driver (tests); jobs and the CLI show the
            project's own lines of it, and Ray's logs go to its session folder (``busgen.core.raylogs``).
        kwargs: passed to ``ray.init``.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not os.environ.get("RAY_ADDRESS"):
        pin_loopback()
    import ray

    if ray.is_initialized():
        return
    raylogs.quiet_driver_console()
    if os.environ.get("RAY_ADDRESS"):
        context = ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)  # pragma: no cover, cluster path
        _filter_driver_output(context)  # pragma: no cover, cluster path
        return
    # address="local": always start our own runtime, never attach to a stray `ray start` cluster
    opts: dict = {"address": "local", "_node_ip_address": LOOPBACK, "include_dashboard": False}
    if num_cpus is not None:
        opts["num_cpus"] = num_cpus
    if object_store_mb is not None:
        opts["object_store_memory"] = object_store_mb * 1024 * 1024
    if quiet:
        opts["log_to_driver"] = False
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", "busgen.core.raylocal.silence_state_api_warnings")
    opts["runtime_env"] = runtime_env
    opts.update(kwargs)
    _filter_driver_output(ray.init(**opts))


def _filter_driver_output(context) -> None:
    """After ``ray.init``: forwarded worker output cut to the project's lines, Ray's records to its log folder."""
    raylogs.install_worker_filter()
    session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")
    if session_dir:
        raylogs.attach_driver_log(session_dir)


# Ray Train V2's detached PlacementGroupCleaner polls the State API, which lives in the
# dashboard. A local runtime starts without one (it costs memory and a port), so the
# cleaner logs a warning every few seconds for the whole run: thousands of lines per hour.
_STATE_API_POLLERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def _errors_only(record) -> bool:
    import logging

    return record.levelno >= logging.ERROR


def silence_state_api_warnings() -> None:
    """Worker start-up hook of a local runtime: drop the no-dashboard State API warnings.

    A logger filter, not a level: Ray Train's ``logging.config.dictConfig`` resets the
    level of every ``ray.train`` child logger when it configures logging, but keeps filters.
    """
    import logging

    for name in _STATE_API_POLLERS:
        logger = logging.getLogger(name)
        if _errors_only not in logger.filters:
            logger.addFilter(_errors_only)


def pin_loopback() -> None:
    """Make a local Ray runtime bind to 127.0.0.1 instead of the machine's external address.

    Ray 2.60 rewrites ``_node_ip_address="127.0.0.1"`` to the external IP unless "cluster
    mode" is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the switch Ray uses on laptops).
    The variable is read at import time, so it is set for child processes (raylet,
    workers) and patched on an already imported ``ray``.
    """
    import sys

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def quiet_ray_data_progress(enabled: bool = False) -> None:
    """Turn Ray Data's own progress bars on or off (we draw our own with tqdm)."""
    import logging

    import ray

    # Ray Data logs a progress table every few seconds at INFO when bars are off.
    logging.getLogger("ray.data").setLevel(logging.INFO if enabled else logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = enabled
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = enabled


def job_run_id() -> str:
    """The Ray job submission id when running under ``ray job submit``, else a fresh local id."""
    import json
    import uuid

    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    return job_config.get("metadata", {}).get("job_submission_id") or f"local-{uuid.uuid4().hex[:12]}"
