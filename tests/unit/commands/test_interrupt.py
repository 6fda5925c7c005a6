"""Ctrl-C on a training command prints one line that says how to resume, and exits 130 (no traceback)."""

from __future__ import annotations

import pytest
import typer

from busgen import cli
from busgen.commands import train
from busgen.commands.registry import command


def test_pretrain_says_to_run_the_same_command_to_resume():
    line = train.resume_line("pretrain", "pretrain-tiny", "/runs", checkpoint_every=100, max_steps=600)
    assert line.startswith("interrupted: run the same command again (run_name=pretrain-tiny)")
    assert "/runs" in line and "one every 100 steps" in line


def test_adapt_says_honestly_that_it_starts_over():
    line = train.resume_line("adapt", "adapt-x-1", "/runs", checkpoint_every=200, max_steps=200)
    assert "nothing was saved" in line and "run_name=adapt-x-1" in line


@pytest.mark.parametrize("signal_as", [KeyboardInterrupt, lambda: SystemExit(0)])  # Ray Train's handler: sys.exit(0)
def test_ctrl_c_in_pretrain_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path, signal_as):
    def interrupted(cfg):
        raise signal_as()

    monkeypatch.setattr("busgen.core.raylocal.init_ray", lambda *a, **k: None)
    monkeypatch.setattr("busgen.train.pretrain.pretrain", interrupted)
    words = [f"data_dir={tmp_path}", "run_name=p1", f"storage_path={tmp_path / 'rt'}", "checkpoint_every=10"]
    with pytest.raises(typer.Exit) as exit_:
        cli.run_command(command("pretrain"), words)
    assert exit_.value.exit_code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: run the same command again (run_name=p1)")
