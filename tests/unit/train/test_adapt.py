"""Few-shot adaptation: recorded K-shot support sets, new label sets, small LoRA adapters, clear refusals."""

import json

import pytest
import torch
from helpers.data import write_lesion_task, write_parquet_dataset
from helpers.models import export_untrained_tiny

from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator
from busgen.model.lora import expand_conditions
from busgen.train import adapt
from busgen.train.adapt import AdaptConfig, AdaptError, select_support


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return export_untrained_tiny(tmp_path_factory.mktemp("base") / "base", seed=0)


@pytest.fixture(scope="module")
def task_b(tmp_path_factory):
    """A new site (phantom device style b) with a new label set: lesion present / absent."""
    return write_lesion_task(tmp_path_factory.mktemp("task") / "b")


def test_support_set_is_seeded_balanced_and_order_independent(task_b):
    a = select_support(task_b, shots=5, classes=None, seed=3)
    b = select_support(task_b, shots=5, classes=None, seed=3)
    c = select_support(task_b, shots=5, classes=None, seed=4)
    assert a.column("sha256").to_pylist() == b.column("sha256").to_pylist()
    assert a.column("sha256").to_pylist() != c.column("sha256").to_pylist()
    labels = a.column("label").to_pylist()
    assert labels.count("lesion") == 5 and labels.count("no_lesion") == 5


def test_too_many_shots_is_a_clear_error(task_b):
    with pytest.raises(AdaptError, match="fewer than --shots 500"):
        select_support(task_b, shots=500, classes=None, seed=0)


def test_new_label_set_keeps_known_embeddings_and_starts_new_ones_at_the_mean(base_dir):
    gen = generator.load(base_dir, device="cpu")
    old = gen.model.label_embedding.weight.detach().clone()
    model = expand_conditions(
        gen.model, gen.class_names, gen.domain_names, ["malignant", "birads4"], ["phantom", "site_b"]
    )
    w = model.label_embedding.weight.detach()
    assert w.shape[0] == 3  # two classes + null
    assert torch.equal(w[0], old[gen.class_names.index("malignant")])
    assert torch.allclose(w[1], old[:3].mean(0))
    assert torch.equal(w[2], old[3]), "the null label keeps its pretrained embedding"


def test_base_of_other_image_size_is_refused(base_dir, tmp_path):
    images, masks, labels = make_phantom_arrays(12, 48, seed=1)
    data_48 = write_parquet_dataset(tmp_path / "d48", images, masks, labels)
    meta = json.loads((base_dir / "busgen.json").read_text())
    with pytest.raises(AdaptError, match="re-ingest with --size 32"):
        adapt.check_compatible(meta, data_48)


def test_base_with_broken_busgen_json_is_refused(task_b, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "busgen.json").write_text("{truncated")
    cfg = AdaptConfig(base=str(tmp_path / "base"), data_dir=str(task_b), out=str(tmp_path / "o"))
    with pytest.raises(AdaptError, match=r"base model .*busgen.json is not valid JSON"):
        adapt.adapt(cfg)
    assert not (tmp_path / "o").exists()
