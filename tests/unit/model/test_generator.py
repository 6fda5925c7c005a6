"""Generator export/load, naming errors, seeded determinism and the box prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from busgen.model import boxprior, generator, unet

CLASSES = ["benign", "malignant", "normal"]
DOMAINS = ["site_a", "site_b"]
BENIGN_BOXES = [[0.2, 0.3, 0.5, 0.5], [0.25, 0.35, 0.55, 0.55], [0.3, 0.3, 0.6, 0.5], [0.22, 0.4, 0.48, 0.6]]


def _export(out_dir, seed=0):
    torch.manual_seed(seed)
    cfg = unet.model_config_for("tiny")
    model = unet.build_model(cfg, len(CLASSES), len(DOMAINS))
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    prior = boxprior.fit(BENIGN_BOXES + [None], ["benign"] * 4 + ["normal"])
    return generator.export_model(out_dir, model, ema, cfg, CLASSES, DOMAINS, prior, "datafp", 0, {"loss": 1.0})


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return generator.load(_export(tmp_path_factory.mktemp("model")))


def test_export_layout_and_metadata(gen):
    root = gen.meta
    assert gen.class_names == CLASSES and gen.domain_names == DOMAINS and gen.image_size == 32
    assert root["sampling_weights"] == generator.EMA_DIR and root["data_fingerprint"] == "datafp"
    assert len(gen.model_id) == 16 and gen.model_id == root["model_id"]


def test_model_id_tracks_weights(tmp_path):
    a = generator.load(_export(tmp_path / "a", seed=0))
    b = generator.load(_export(tmp_path / "b", seed=0))
    c = generator.load(_export(tmp_path / "c", seed=1))
    assert a.model_id == b.model_id != c.model_id


def test_same_seed_same_images_different_seed_differs(gen):
    a = gen.sample(["benign", "normal"], domains="site_a", steps=4, seed=7)
    b = gen.sample(["benign", "normal"], domains="site_a", steps=4, seed=7)
    c = gen.sample(["benign", "normal"], domains="site_a", steps=4, seed=8)
    assert a.dtype == np.uint8 and a.shape == (2, 32, 32)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 5


def test_per_image_seeds_independent_of_batch_composition(gen):
    batch = gen.sample(["benign", "malignant", "normal"], domains=["site_a", None, "site_b"], steps=4, seeds=[5, 6, 7])
    alone = gen.sample(["normal"], domains=["site_b"], steps=4, seeds=[7])
    other = gen.sample(
        ["malignant", "normal", "benign"],
        domains=["site_a", "site_b", "site_a"],
        steps=4,
        seeds=[1, 7, 2],
        batch_size=2,
    )
    assert np.abs(alone[0].astype(int) - batch[2]).max() <= 2
    assert np.abs(other[1].astype(int) - batch[2]).max() <= 2


def test_omitted_boxes_come_from_prior_seeded_per_image(gen):
    boxes = gen.resolve_boxes(["benign", "benign", "normal"], None, [3, 4, 3])
    assert boxes[2] is None  # no boxes for 'normal' in training -> no lesion
    assert boxes[0] != boxes[1] and boxes[0] == gen.resolve_boxes(["benign"], None, [3])[0]
    explicit = gen.resolve_boxes(["benign", "benign"], [[0.1, 0.1, 0.2, 0.2], ()], [0, 1])
    assert explicit == [[0.1, 0.1, 0.2, 0.2], ()]


def test_unknown_names_raise_with_valid_options(gen):
    with pytest.raises(ValueError, match=r"unknown label 'cyst'.*benign"):
        gen.sample(["cyst"], steps=1)
    with pytest.raises(ValueError, match=r"unknown domain 'site_z'.*site_a"):
        gen.sample(["benign"], domains="site_z", steps=1)
    with pytest.raises(ValueError, match="seeds"):
        gen.sample(["benign"], seeds=[1, 2], steps=1)


def test_load_rejects_non_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="busgen.json"):
        generator.load(tmp_path)
    with pytest.raises(generator.ModelLoadError, match="busgen.json"):
        generator.load(tmp_path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", r"busgen.json is not valid JSON \(Expecting property name"),
        ("[1, 2]", r"busgen.json holds a JSON list, not an object"),
        ('{"domain_names": [], "image_size": 32, "diffusion": {}}', r"busgen.json lacks class_names"),
        (
            '{"class_names": [], "domain_names": [], "image_size": 32, "diffusion": {}}',
            r"busgen.json: class_names must be a non-empty list",
        ),
    ],
)
def test_load_names_the_file_and_problem_of_a_broken_busgen_json(tmp_path, text, match):
    (tmp_path / "busgen.json").write_text(text)
    with pytest.raises(generator.ModelLoadError, match=rf"{tmp_path}/{match}.*re-export the model"):
        generator.load(tmp_path)


def test_adapter_meta_without_its_base_is_a_clear_error(tmp_path):
    meta = {"kind": "adapter", "class_names": ["a"], "domain_names": [], "image_size": 32, "diffusion": {}}
    (tmp_path / "busgen.json").write_text(json.dumps(meta))
    with pytest.raises(generator.ModelLoadError, match="lacks adapter, base_model, base_model_rel, base_model_id"):
        generator.load(tmp_path)


# ----------------------------------------------------------------------------- box prior


def test_box_prior_samples_near_training_boxes_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal([0.4, 0.5], 0.03, (200, 2))
    boxes = np.concatenate([centers - 0.1, centers + 0.1], axis=1).tolist()
    prior = boxprior.fit(boxes + [None] * 10, ["malignant"] * 200 + ["normal"] * 10)
    drawn = np.array(prior.sample("malignant", 500, seed=1))
    assert (
        drawn.min() >= 0
        and drawn.max() <= 1
        and (drawn[:, 2] > drawn[:, 0]).all()
        and (drawn[:, 3] > drawn[:, 1]).all()
    )
    cx = (drawn[:, 0] + drawn[:, 2]) / 2
    assert abs(cx.mean() - 0.4) < 0.03 and abs((drawn[:, 2] - drawn[:, 0]).mean() - 0.2) < 0.03
    assert prior.sample("normal", 3, seed=0) == [None, None, None]
    assert prior.sample("never_seen", 1, seed=0) == [None]
    prior.save(tmp_path / "p.json")
    json.loads((tmp_path / "p.json").read_text())  # plain JSON, no pickle
    again = boxprior.load(tmp_path / "p.json")
    assert again.sample("malignant", 5, seed=9) == prior.sample("malignant", 5, seed=9)
    assert again.sample("malignant", 5, seed=9) != prior.sample("malignant", 5, seed=10)


def test_box_prior_clips_to_unit_square():
    prior = boxprior.fit([[0.0, 0.0, 0.05, 0.05], [0.95, 0.9, 1.0, 1.0]], ["benign", "benign"])
    drawn = np.array(prior.sample("benign", 200, seed=0))
    assert drawn.min() >= 0.0 and drawn.max() <= 1.0
