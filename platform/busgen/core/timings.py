"""Wall time per stage of a run: the one stage timer of suites, studies and the demo.

``with timings.stage("pretrain"):`` records the stage's seconds and, when the timer has a
``tag``, prints a start line and an end line with the elapsed time and the run's total, so a
long run always says where it is. With a ``path`` the record is a JSON file rewritten after
every stage: a resumed run keeps the times of the stages it does not repeat.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


class Timings:
    """Stage name -> seconds, optionally printed (``tag``) and persisted (``path``)."""

    def __init__(self, tag: str | None = None, path: str | Path | None = None):
        self.tag = tag
        self.path = Path(path) if path else None
        self.seconds: dict[str, float] = (
            json.loads(self.path.read_text()) if self.path is not None and self.path.is_file() else {}
        )

    @contextmanager
    def stage(self, name: str, label: str | None = None) -> Iterator[None]:
        """Time the block as stage ``name``; ``label`` is the start line's wording (default: the name)."""
        if self.tag:
            print(f"[{self.tag}] {label or name} ...", flush=True)
        start = time.time()
        yield
        self.seconds[name] = round(time.time() - start, 1)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.seconds, indent=2))
        if self.tag:
            total = round(sum(self.seconds.values()), 1)
            print(f"[{self.tag}] {name} done in {self.seconds[name]} s ({self.tag} total {total} s)", flush=True)

    def timed(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` timed as stage ``name``; returns its value."""
        with self.stage(name):
            return fn(*args, **kwargs)
