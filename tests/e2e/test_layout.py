"""The package layout contract: `platform/` is a source root, never a package."""

import subprocess
import sys

from helpers.paths import REPO_ROOT


def test_stdlib_platform_still_works_from_repo_root():
    cmd = "import platform, ray; platform.system(); import busgen; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Linux"
