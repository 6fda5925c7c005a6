"""One registry of commands feeds the CLI and the jobs: the same words give the same typed config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from busgen.commands.command import docstring_summary
from busgen.commands.registry import COMMANDS


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (what a user's shell starts); it must exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def test_the_summary_is_read_without_importing_the_config_module():
    code = (
        "import sys; from busgen.commands.command import docstring_summary\n"
        "print(docstring_summary('busgen.train.pretrain:PretrainConfig'))\n"
        "print('busgen.train.pretrain' in sys.modules, 'torch' in sys.modules)"
    )
    out = run_python(code)
    assert out.stdout.split("\n")[0].startswith("Pretrain the diffusion generator")
    assert out.stdout.split()[-2:] == ["False", "False"]
    with pytest.raises(ValueError, match="defines no class"):
        docstring_summary("busgen.train.pretrain:NoSuchConfig")


def test_version_and_help_are_instant_and_import_neither_torch_nor_ray():
    code = (
        "import sys; from busgen.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'ray' in sys.modules)"
    )
    out = run_python(code)
    assert out.stdout.split()[-2:] == ["False", "False"] and "busgen 0.1.0" in out.stdout


def test_help_lists_every_command_with_its_summary_in_under_two_seconds():
    import time

    busgen = Path(sys.executable).parent / "busgen"
    argv = [str(busgen), "--help"] if busgen.exists() else [sys.executable, "-m", "busgen.cli", "--help"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    for name, op in COMMANDS.items():
        assert re.search(rf"{re.escape(name)}\s+{re.escape(op.summary[:40])}", out.stdout), name
    assert seconds < 2.0, f"busgen --help took {seconds:.2f} s"
