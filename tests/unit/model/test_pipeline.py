"""A model folder is a diffusers pipeline: `DiffusionPipeline.from_pretrained` samples busgen's own pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffusers import DiffusionPipeline, UNet2DModel
from helpers.models import export_untrained_tiny

from busgen.model import generator, hub, pipeline_files
from busgen.model.pipeline import BUSGenPipeline
from busgen.model.unet import ConditionalUNet

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LABELS = ["benign", "malignant", "normal", "malignant"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_untrained_tiny(tmp_path_factory.mktemp("models") / "tiny", seed=3, size=32)


def busgen_images(model, **kw):
    return generator.load(model, device="cpu").sample(LABELS, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"steps": 3, "guidance": 1.8, "seed": 7},  # ddim (the default), box prior drawn per seed
        {"steps": 2, "guidance": 1.0, "seeds": [5, 2**62, 9, 0], "sampler": "dpmpp", "domains": "phantom"},
        {"steps": 2, "guidance": 2.5, "seed": 1, "sampler": "ddpm", "boxes": [None, (), [0.2, 0.2, 0.6, 0.7], None]},
    ],
)
def test_diffusion_pipeline_samples_the_same_pixels_as_busgen(model, kw):
    pipe = DiffusionPipeline.from_pretrained(str(model), local_files_only=True, trust_remote_code=True)
    sampling = json.loads((model / "busgen.json").read_text())["sampling_weights"]  # unet: this export has no EMA
    assert type(pipe).__name__ == "BUSGenPipeline" and isinstance(getattr(pipe, sampling), ConditionalUNet)
    images = pipe(LABELS, output_type="np", **kw).images
    assert images.dtype == np.uint8 and images.shape == (4, 32, 32)
    assert np.array_equal(images, busgen_images(model, **kw))


def test_custom_pipeline_spelling_and_pil_output(model):
    pipe = DiffusionPipeline.from_pretrained(
        str(model), custom_pipeline=str(model / "pipeline.py"), local_files_only=True, trust_remote_code=True
    )
    (pil,) = pipe(LABELS[:2], steps=2, seed=4, return_dict=False)
    expected = generator.load(model, device="cpu").sample(LABELS[:2], steps=2, seed=4)
    assert [im.mode for im in pil] == ["L", "L"] and np.array_equal(np.stack([np.asarray(i) for i in pil]), expected)


def test_the_index_lists_the_sampling_weights_and_the_pipeline_settings(model):
    index = json.loads((model / "model_index.json").read_text())
    meta = json.loads((model / "busgen.json").read_text())
    assert index["_class_name"] == ["pipeline", "BUSGenPipeline"]
    assert index[meta["sampling_weights"]] == ["busgen.model.unet", "ConditionalUNet"]
    assert index["class_names"] == meta["class_names"] and index["model_id"] == meta["model_id"]


def test_unet2dmodel_refuses_a_conditional_unet_folder_instead_of_loading_random_weights(model):
    with pytest.raises(ValueError, match="conditionalunet.from_pretrained"):
        UNet2DModel.from_pretrained(str(model / "unet"))
    assert isinstance(ConditionalUNet.from_pretrained(str(model / "unet")), ConditionalUNet)


def test_a_hub_export_is_a_pipeline_too(model, tmp_path):
    repo = hub.export_hub(model, tmp_path / "repo")
    pipe = DiffusionPipeline.from_pretrained(str(repo), local_files_only=True, trust_remote_code=True)
    assert np.array_equal(pipe(LABELS, steps=2, output_type="np").images, busgen_images(model, steps=2))


def test_an_adapter_is_refused_with_one_line_and_loads_through_from_busgen():
    with pytest.raises(pipeline_files.PipelineFilesError, match="^error: a LoRA adapter folder .*from_busgen"):
        pipeline_files.model_index({"kind": "adapter", "class_names": ["a"], "domain_names": []}, {}, "0")


def test_from_busgen_builds_the_pipeline_from_any_folder(model):
    pipe = BUSGenPipeline.from_busgen(model, device="cpu")
    assert np.array_equal(pipe(LABELS, steps=2, output_type="np").images, busgen_images(model, steps=2))
