"""Model folders received from elsewhere: every file that busgen.json names must be inside the folder.

A folder whose ``sampling_weights`` points at ``/abs/...``, at ``../`` or through a link
to weights elsewhere would load those weights while ``model_id`` still fingerprints the
folder's own files. Such folders are refused with ``ModelLoadError`` before any weight loads.
"""

from __future__ import annotations

import json
import shutil

import pytest
from helpers.models import export_untrained_tiny

from busgen.model import generator
from busgen.model.generator import ModelLoadError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return export_untrained_tiny(tmp_path_factory.mktemp("models") / "tiny")


def with_weights_at(tmp_path, tiny, where) -> tuple:
    """A copy of ``tiny`` whose busgen.json names ``where(folder, elsewhere)`` as its sampling weights."""
    folder, elsewhere = tmp_path / "received", tmp_path / "elsewhere"
    shutil.copytree(tiny, folder)
    shutil.copytree(tiny / "unet", elsewhere / "weights")
    meta = json.loads((folder / "busgen.json").read_text())
    (folder / "busgen.json").write_text(json.dumps(meta | {"sampling_weights": where(folder, elsewhere)}))
    return folder, elsewhere


def link_out(folder, elsewhere) -> str:
    (folder / "linked").symlink_to(elsewhere / "weights", target_is_directory=True)
    return "linked"


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda folder, elsewhere: str(elsewhere / "weights"), id="absolute"),
        pytest.param(lambda folder, elsewhere: "../elsewhere/weights", id="dot-dot"),
        pytest.param(lambda folder, elsewhere: "unet/../../elsewhere/weights", id="dot-dot-inside"),
        pytest.param(link_out, id="link-out"),
        pytest.param(lambda folder, elsewhere: ["unet"], id="not-a-string"),
    ],
)
def test_sampling_weights_outside_the_folder_are_refused(tmp_path, tiny, where):
    folder, _ = with_weights_at(tmp_path, tiny, where)
    with pytest.raises(ModelLoadError, match="sampling_weights"):
        generator.read_meta(folder)
    with pytest.raises(ModelLoadError, match="sampling_weights"):
        generator.load(folder, device="cpu")


def test_sampling_weights_inside_the_folder_still_load(tmp_path, tiny):
    folder, _ = with_weights_at(tmp_path, tiny, lambda folder, elsewhere: "./unet/../unet")
    gen = generator.load(folder, device="cpu")
    assert gen.model_id == generator.weights_fingerprint(folder) == generator.load(tiny, device="cpu").model_id
