"""The utility stage of evaluate is no longer silent: every finished Tune trial prints done/running/total and an ETA."""

import re

import pytest
from pydantic import BaseModel

from busgen.eval import sweep


class WaitSettings(BaseModel):
    seconds: float


@pytest.mark.slow  # a Tune grid (the suites' grids run in make test-all)
def test_a_tiny_grid_prints_one_progress_line_per_trial(ray_local, monkeypatch, tmp_path, capfd):
    def wait(settings: dict) -> dict:  # a closure: Tune ships it to workers by value
        import time

        time.sleep(settings["seconds"])
        return {"slept": settings["seconds"]}

    monkeypatch.setitem(sweep.TRIALS, "wait", sweep.TrialKind(WaitSettings, wait, ()))
    points = [{"seconds": s} for s in (0.1, 0.2, 0.3)]
    rows = sweep.run_trials("wait", {}, points, str(tmp_path / "tune"), "tiny-utility", {"CPU": 1})
    assert sorted(r["slept"] for r in rows) == [0.1, 0.2, 0.3]
    lines = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("[tiny-utility] trial")]
    assert [re.search(r"trial (\d)/3 done", ln).group(1) for ln in lines] == ["1", "2", "3"], lines
    assert all(re.search(r"\d+ running, \d+ pending \| elapsed \S+ \| ETA \S+$", ln) for ln in lines)
    assert lines[-1].endswith("ETA 0s")
