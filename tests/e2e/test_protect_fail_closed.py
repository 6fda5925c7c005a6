"""Protected sampling fails closed on the command line: an unfitted protection classifier is exit 2, one `error:` line.

The classifier records the issue's fit (0.78 when `busgen protect`'s 10-minute limit hit). `busgen sample` and
`busgen generate` refuse it before any image is drawn (generate before Ray starts), naming the remedy; lowering
the floor explicitly (`--protect-min-fit`) samples.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.models import export_untrained_tiny

from busgen.model import generator, protect

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def unfitted_model(tmp_path_factory):
    folder = export_untrained_tiny(tmp_path_factory.mktemp("unfitted") / "model", size=32)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    record = {"fit_accuracy": 0.78, "fitted": False, "stopped": "time", "train": {"max_minutes": 10.0}}
    protect.save_protector(folder, net, {"generator_model_id": generator.weights_fingerprint(folder), **record})
    return folder


def busgen(*words: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "busgen.cli", *words], capture_output=True, text=True, timeout=150)


def assert_one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "below the floor 0.95" in lines[0] and "max_minutes=20.0" in lines[0] and "protect_min_fit" in lines[0]
    return lines[0]


def test_sample_with_an_unfitted_classifier_exits_2_with_one_error_line(unfitted_model, tmp_path):
    out = tmp_path / "grid.png"
    assert_one_error_line(busgen("sample", "--model", str(unfitted_model), "--out", str(out), "--protect", "cpsample"))
    assert not out.exists()


def test_generate_with_an_unfitted_classifier_exits_2_before_any_shard(unfitted_model, tmp_path):
    out = tmp_path / "syn"
    words = ["generate", "--model", str(unfitted_model), "--out", str(out), "--n", "4", "--protect", "cpsample"]
    assert_one_error_line(busgen(*words, "--no-tracking"))
    assert not (out / "manifest.json").exists()


def test_an_explicitly_lowered_floor_samples(unfitted_model, tmp_path):
    out = tmp_path / "grid.png"
    words = ["--per-class", "1", "--steps", "1", "--protect", "cpsample", "--protect-min-fit", "0.7"]
    proc = busgen("sample", "--model", str(unfitted_model), "--out", str(out), *words)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "fit floor 0.7" in proc.stdout
