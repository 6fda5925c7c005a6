"""`busgen sample` draws a grid of samples per class to one PNG, the same grid for the same seed."""

from __future__ import annotations

import pytest
from helpers.models import CLASSES, export_untrained_tiny
from PIL import Image
from typer.testing import CliRunner

from busgen.cli import app


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_untrained_tiny(tmp_path_factory.mktemp("models") / "tiny", seed=0, size=32)


def sample(model, out, *extra: str):
    words = ["sample", "--model", str(model), "--out", str(out), "--per-class", "3", "--steps", "2", *extra]
    return CliRunner().invoke(app, words)


def test_one_row_per_class_one_column_per_image_and_repeatable(model, tmp_path):
    first = sample(model, tmp_path / "a.png")
    assert first.exit_code == 0, first.output
    assert "wrote 3 x 3 samples" in first.output
    grid = Image.open(tmp_path / "a.png")
    cell, pad, label = 32, 2, 80  # the model's image size, the grid's gap and label column
    assert grid.size == (label + 3 * (cell + pad), len(CLASSES) * (cell + pad))
    assert sample(model, tmp_path / "b.png").exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes(), "same seed, same grid"
    assert sample(model, tmp_path / "c.png", "--seed", "1").exit_code == 0
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_a_class_the_model_does_not_know_is_one_error_line(model, tmp_path):
    result = sample(model, tmp_path / "x.png", "--classes", "benign,cyst")
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "['cyst'] are not classes of" in result.output and not (tmp_path / "x.png").exists()
