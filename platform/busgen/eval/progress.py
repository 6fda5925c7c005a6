"""One progress line per finished Tune trial: done/running/total and an ETA.

Tune runs with ``verbose=0`` (its tables swamp job logs), which left a 34-minute utility
grid silent. This callback prints instead, on the driver, a single line each time a trial
finishes or fails, e.g.::

    [busi-utility] trial 3/12 done (ok) | 2 running, 7 pending | elapsed 4m10s | ETA 12m30s

The ETA is the mean wall time per finished trial times the trials left (concurrency
included, since it is measured, not assumed).
"""

from __future__ import annotations

import time
from typing import Callable


def fmt_seconds(seconds: float) -> str:
    """``42s``, ``4m10s``, ``1h02m``: short enough for a log line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def progress_line(label: str, done: int, total: int, running: int, elapsed: float, status: str) -> str:
    """The line printed after a trial ends (pure, so the format is tested without Tune)."""
    left = total - done
    eta = fmt_seconds(elapsed / done * left) if done else "?"
    pending = max(left - running, 0)
    return (
        f"[{label}] trial {done}/{total} done ({status}) | {running} running, {pending} pending "
        f"| elapsed {fmt_seconds(elapsed)} | ETA {eta if left else '0s'}"
    )


def trial_progress(label: str, total: int, emit: Callable[[str], None] | None = None):
    """A ``ray.tune.Callback`` that emits ``progress_line`` on every trial completion or error."""
    from ray import tune

    emit = emit or (lambda line: print(line, flush=True))

    class TrialProgress(tune.Callback):
        def __init__(self):
            self.t0 = time.monotonic()
            self.finished: dict[str, str] = {}

        def setup(self, **info):
            self.t0 = time.monotonic()

        def _report(self, trials, trial, status: str) -> None:
            self.finished[trial.trial_id] = status
            running = sum(t.status == "RUNNING" and t.trial_id not in self.finished for t in trials)
            elapsed = time.monotonic() - self.t0
            emit(progress_line(label, len(self.finished), total, running, elapsed, status))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._report(trials, trial, "ok")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._report(trials, trial, "error")

    return TrialProgress()
