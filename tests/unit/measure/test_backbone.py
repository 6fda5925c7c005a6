"""The label-free backbone: pretrained without labels, loaded into every arm's classifier, head left random."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from busgen.data.phantom import make_phantom_arrays
from busgen.measure.backbone import BackboneConfig, pretrain_backbone
from busgen.model.classifier import ClassifierConfig, build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bb")
    images = make_phantom_arrays(48, 32, seed=5)[0]
    cfg = BackboneConfig(data_dir="phantoms", out=str(out), width=8, image_size=32, epochs=2, batch_size=16)
    pretrain_backbone(images, cfg, source="48 phantoms")
    return out


def test_the_backbone_card_says_what_pretrained_it_and_holds_no_head(backbone):
    from safetensors.torch import load_file

    card = json.loads((backbone / "backbone.json").read_text())
    assert card["pretrained_on"] == "48 phantoms" and card["n_images"] == 48 and len(card["loss_per_epoch"]) == 2
    assert not any(k.startswith("head.") for k in load_file(str(backbone / "backbone.safetensors")))


def test_every_seed_starts_from_the_same_backbone_and_only_the_head_differs(backbone):
    nets = [
        build_model(ClassifierConfig(width=8, image_size=32, seed=s, init_backbone=str(backbone)), 2) for s in (0, 1)
    ]
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        if name.startswith(("stem.", "stages.")):
            assert torch.equal(a, b), name


def test_a_backbone_of_another_width_is_refused(backbone):
    with pytest.raises(ValueError, match="pretrain-backbone"):
        build_model(ClassifierConfig(width=16, image_size=32, init_backbone=str(backbone)), 2)
