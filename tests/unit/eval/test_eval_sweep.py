"""The one Tune grid runner: sweeps and suites validate on the driver, run one trial per point, one row each."""

from __future__ import annotations

import pytest

from busgen.eval.sweep import SweepConfig, TrialError, grid_points, prepared


def test_grid_points_are_every_combination():
    cfg = SweepConfig(out="o", grid={"sampler": ["ddim", "dpmpp"], "steps": [2, 4, 8]})
    points = grid_points(cfg)
    assert len(points) == 6 and {"sampler": "dpmpp", "steps": 8} in points


def test_bad_points_and_kinds_fail_before_tune(tmp_path):
    with pytest.raises(TrialError, match="unknown trial kind 'nope'"):
        prepared("nope", {}, [{}])
    with pytest.raises(TrialError, match=r"grid point \{'sampler': 'euler'\} is not a valid sample trial"):
        prepared("sample", {"model": "m"}, [{"sampler": "ddim"}, {"sampler": "euler"}])
    with pytest.raises(TrialError, match="needs synthetic_dir"):
        base = {"real_dir": "r", "classes": ["a", "b"], "positive": "b", "artifacts_dir": "x"}
        prepared("utility", base, [{"ratio": 1.0}])


def test_path_settings_are_made_absolute_for_trials_on_other_nodes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = prepared("sample", {"model": "models/m", "n": 2}, [{"steps": 2}])
    assert base == {"model": str(tmp_path / "models" / "m"), "n": 2}
