"""The package layout contract: `platform/` is a source root, never a package."""

import pytest
from helpers.paths import REPO_ROOT


def test_platform_dir_is_not_a_package():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    assert (REPO_ROOT / "platform" / "busgen" / "__init__.py").exists()


def test_cli_help_on_every_command():
    from typer.testing import CliRunner

    from busgen.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    names = [cmd.name or cmd.callback.__name__.replace("_", "-") for cmd in app.registered_commands]
    assert {"phantom", "ingest", "dataset-report"} <= set(names)
    for name in names:
        assert name in top.output
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert "Usage" in res.output


def test_unit_tests_start_no_python_subprocess():
    """tests/unit/conftest.py keeps the folder in-process: a test that needs a subprocess belongs in tests/e2e."""
    import subprocess
    import sys

    with pytest.raises(AssertionError, match="unit tests start no Python subprocess"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
