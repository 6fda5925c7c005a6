"""Where things are: the repository, the tests folder and the shared real data beside the checkout."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS.parent
SHARED = REPO_ROOT.parent / "shared"
SHARED_BUSI = SHARED / "data" / "busi128"
