"""The package layout contract: `platform/` is a source root, never a package."""

import subprocess
import sys

from conftest import REPO_ROOT


def test_platform_dir_is_not_a_package():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    assert (REPO_ROOT / "platform" / "busgen" / "__init__.py").exists()


def test_stdlib_platform_still_works_from_repo_root():
    cmd = "import platform, ray; platform.system(); import busgen; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Linux"


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
