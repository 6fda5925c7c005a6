"""The ``busgen tradeoff`` entry: the sweep on a model folder, or on the memorising fixture (``fixture=true``).

A module of its own so that ``fixture`` (which builds on ``run``) and ``run`` do not import each other.
"""

from __future__ import annotations

from busgen.studies.tradeoff.fixture import run_fixture
from busgen.studies.tradeoff.run import TradeoffConfig, run_tradeoff


def run_study(cfg: TradeoffConfig, log=print) -> dict:
    """Sample, measure and report every strength on ``cfg.model``, or on the memorising fixture."""
    return run_fixture(cfg, log=log) if cfg.fixture else run_tradeoff(cfg, log=log)
