"""Ingest: every input file ends up ingested, as a reported duplicate, or quarantined with a reason."""

import numpy as np
import pytest

from busgen.data.imageio import encode_png, resize_square
from busgen.data.ingest import IngestError, ingest


def test_resize_modes_keep_or_ignore_aspect():
    wide = np.full((20, 40), 255, np.uint8)
    padded = resize_square(wide, 20, "pad")
    cropped = resize_square(wide, 20, "crop")
    assert padded[:5].max() == 0 and padded[5:15].min() == 255
    assert cropped.min() == 255 and cropped.shape == (20, 20)


def test_missing_or_empty_source_and_existing_output_are_clear_errors(tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        ingest(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="empty"):
        ingest(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "x").write_text("keep me")
    (tmp_path / "src" / "benign").mkdir(parents=True)
    (tmp_path / "src" / "benign" / "a.png").write_bytes(encode_png(np.zeros((8, 8), np.uint8)))
    with pytest.raises(IngestError, match="--overwrite"):
        ingest(tmp_path / "src", tmp_path / "out2")
    assert (tmp_path / "out2" / "x").read_text() == "keep me"


def test_cli_ingest_fails_clearly_on_missing_source(tmp_path):
    from typer.testing import CliRunner

    from busgen.cli import app

    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "does not exist" in res.output
