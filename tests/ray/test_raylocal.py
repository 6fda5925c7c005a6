"""The local Ray runtime every test, job and the demo start: loopback only, and quiet about missing extras."""

import logging


def test_local_runtime_advertises_loopback_only(ray_local):
    """Ray would otherwise advertise the machine's external address and open it to the network."""
    ray = ray_local
    assert {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]} == {"127.0.0.1"}


def test_workers_do_not_log_state_api_warnings(ray_local):
    """Without a dashboard, Ray Train's placement-group cleaner would warn every few seconds for a whole run."""
    ray = ray_local
    from busgen.core.raylocal import _STATE_API_POLLERS

    @ray.remote(num_cpus=0)
    def passes(level: int) -> list[bool]:
        import logging.config

        # what Ray Train does when it configures logging: child loggers get their level reset
        logging.config.dictConfig(
            {"version": 1, "disable_existing_loggers": False, "loggers": {"ray.train": {"level": "INFO"}}}
        )
        out = []
        for name in _STATE_API_POLLERS:
            logger = logging.getLogger(name)
            out.append(
                logger.isEnabledFor(level) and logger.filter(logger.makeRecord(name, level, "f", 1, "msg", (), None))
            )
        return out

    assert ray.get(passes.remote(logging.WARNING), timeout=60) == [False] * len(_STATE_API_POLLERS)
    assert ray.get(passes.remote(logging.ERROR), timeout=60) == [True] * len(_STATE_API_POLLERS)


def test_caller_runtime_env_is_kept_alongside_the_hook(monkeypatch):
    """init_ray merges its start-up hook into a runtime_env the caller passes, instead of replacing it."""
    import ray

    from busgen.core import raylocal

    seen: dict = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **opts: seen.update(opts))
    raylocal.init_ray(num_cpus=1, runtime_env={"env_vars": {"A": "1"}})
    assert seen["runtime_env"] == {
        "env_vars": {"A": "1"},
        "worker_process_setup_hook": "busgen.core.raylocal.silence_state_api_warnings",
    }
    assert seen["address"] == "local" and seen["_node_ip_address"] == "127.0.0.1"
