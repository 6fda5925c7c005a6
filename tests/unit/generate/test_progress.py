"""Generation progress moves per micro-batch, and "steady img/s" is the running pool's real throughput."""

from __future__ import annotations

import sys

import pytest

from busgen import cli
from busgen.commands.registry import command
from busgen.generate.progress import ProgressCounter, batches, steady_rate


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_two_actors_finishing_shards_together_give_their_summed_rate_not_a_burst():
    # 2 actors, 64-image shards in 4 batches of 16, one batch per 10 s each: 2 x 1.6 = 3.2 img/s.
    # Shard arrivals 10 ms apart made the old per-shard formula report (128 - 64) / 0.01 = 6,400 img/s.
    clock = Clock()
    counter = ProgressCounter(clock)
    for step in range(1, 5):
        clock.now = 10.0 * step
        counter.add("a", 16)
        clock.now += 0.01
        counter.add("b", 16)
    snap = counter.snapshot()
    assert snap["images"] == 128 and batches(snap) == 8
    assert steady_rate(snap) == pytest.approx(3.2)


def test_model_load_before_the_first_batch_does_not_lower_the_rate():
    clock = Clock()
    counter = ProgressCounter(clock)
    clock.now = 60.0  # a minute of actor start and model load
    counter.add("a", 8)
    clock.now = 64.0
    counter.add("a", 8)
    assert steady_rate(counter.snapshot()) == pytest.approx(2.0)


def test_one_batch_has_no_measured_rate():
    counter = ProgressCounter(Clock())
    counter.add("a", 8)
    assert steady_rate(counter.snapshot()) == 0.0


@pytest.mark.parametrize("tty", [True, False])
def test_generate_shows_progress_by_default_on_a_terminal_only(monkeypatch, tmp_path, tty):
    seen = {}
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    monkeypatch.setattr("busgen.commands.generate.run_generate", lambda cfg: seen.setdefault("cfg", cfg) and {})
    cli.run_command(command("generate"), [f"--model={tmp_path}", f"--out={tmp_path / 'syn'}", "--n=4"])
    assert seen["cfg"].progress is tty
