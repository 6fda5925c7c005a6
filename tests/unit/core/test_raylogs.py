"""A command prints its own lines; Ray's chatter goes to Ray's log folder, not the terminal.

The sample lines are from a real ``busgen pretrain`` (Ray 2.60) before this filter existed.
"""

from __future__ import annotations

import io
import logging

from ray._private.ray_logging import WorkerStandardStreamDispatcher

from busgen.core import raylogs

OURS = [
    "[pretrain] step 2/6 loss 1.0527 lr 9.05e-04 3.2 img/s ETA 0m24s",
    "[pretrain] 1 worker(s): start at step 0 of 6 (weights cd2fad7541732d42); cpu fp32",
    "[busi-utility] trial 3/12 done (ok) | 2 running, 7 pending | elapsed 4m10s | ETA 12m30s",
    "error: the data folder has no labels.csv",
]
RAYS = [
    "Reporting training result 1: TrainingReport(checkpoint=None, metrics={'step': 2, 'loss': 1.03})",
    "Exception in thread PlacementGroupCleanerMonitor:",
    "Traceback (most recent call last):",
    "ConnectionError: Found multiple active Ray instances: {'127.0.0.1:42247', '127.0.0.1:33211'}.",
    "[dataset]: A new progress UI is available. To enable, set `ray.data.DataContext...`",
    "Setting up process group for: env:// [rank=0, world_size=1]",
    "Moving model to device: cpu",
    "\x1b[A- split(1, equal=True):   0%|          | 0.00/1.00 [00:00<?, ? row/s]",
    "[libprotobuf FATAL] Mutex corrupt",
]


def test_only_the_projects_own_lines_count_as_ours():
    assert [raylogs.is_project_line(line) for line in OURS] == [True] * len(OURS)
    assert [line for line in RAYS if raylogs.is_project_line(line)] == []


def test_forwarded_worker_output_prints_only_our_lines_without_rays_prefix(capsys):
    printed: list = []
    dispatcher = WorkerStandardStreamDispatcher()
    dispatcher.add_handler("ray_print_logs", printed.append)  # what ray.init registers
    assert raylogs.install_worker_filter(dispatcher)
    batch = {"ip": "127.0.0.1", "localhost": "127.0.0.1", "pid": 4242, "actor_name": "RayTrainWorker", "is_err": False}
    dispatcher.emit({**batch, "lines": RAYS[:3] + OURS[:1] + RAYS[3:]})
    dispatcher.emit({**batch, "lines": RAYS})  # nothing of ours: nothing printed
    assert printed == []  # Ray's own printer was replaced, not chained
    assert capsys.readouterr().out.splitlines() == OURS[:1]


def test_busgen_ray_logs_all_leaves_rays_output_alone(monkeypatch):
    monkeypatch.setenv(raylogs.SHOW_ALL_ENV, "all")
    dispatcher = WorkerStandardStreamDispatcher()
    dispatcher.add_handler("ray_print_logs", print)
    assert not raylogs.install_worker_filter(dispatcher)
    assert dispatcher.handlers == [("ray_print_logs", print)]


def test_rays_driver_records_leave_the_console_but_reach_the_session_log(tmp_path):
    logger = logging.getLogger("ray.busgen_test")
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    ray_root = logging.getLogger("ray")
    handlers_before = list(ray_root.handlers)
    try:
        raylogs.quiet_driver_console(("ray.busgen_test",))
        logger.warning("Token authentication is enabled for this Ray cluster.")  # before the session exists
        (tmp_path / "logs").mkdir()
        path = raylogs.attach_driver_log(str(tmp_path))
        logger.info("Started a local Ray instance.")
        logger.error("the raylet died")
        assert console.getvalue().splitlines() == ["the raylet died"]
        kept = open(path).read()
        assert "Token authentication" in kept and "Started a local Ray instance" in kept and "raylet died" in kept
    finally:
        logger.removeHandler(handler)
        for h in set(ray_root.handlers) - set(handlers_before):
            ray_root.removeHandler(h)
            h.close()
