"""`busgen train-classifier` turns an ingested dataset into a classifier folder that serving loads as it is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers.data import write_parquet_dataset
from typer.testing import CliRunner

from busgen.cli import app
from busgen.data import schema
from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.model import classifier
from busgen.serve.config import ServeArgs
from busgen.serve.preflight import folder_problems
from busgen.serve.registry import read_classifier_info

SIZE = 32

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A phantom set in the ingest layout: 60 train, 30 val, 30 test images, with its dataset.json."""
    parts = {
        split: make_phantom_arrays(n, SIZE, seed=k)
        for k, (split, n) in enumerate((("train", 60), ("val", 30), ("test", 30)))
    }
    images = np.concatenate([p[0] for p in parts.values()])
    masks = np.concatenate([p[1] for p in parts.values()])
    labels = [lab for p in parts.values() for lab in p[2]]
    splits = [s for s, p in parts.items() for _ in p[2]]
    out = write_parquet_dataset(tmp_path_factory.mktemp("data") / "phantom", images, masks, labels, "phantom", splits)
    info = {"kind": "ingested", "source_name": "phantom", "classes": list(CLASSES), "image_size": SIZE}
    (out / schema.DATASET_JSON).write_text(json.dumps(info))
    return out


def train(data_dir, out, *extra: str):
    words = ["train-classifier", "--data-dir", str(data_dir), "--out", str(out), "--width", "8", "--epochs", "2"]
    return CliRunner().invoke(app, [*words, "--batch-size", "32", *extra])


def test_the_folder_holds_safetensors_a_config_and_a_card_and_serving_accepts_it(data_dir, model_dir, tmp_path):
    result = train(data_dir, tmp_path / "clf")
    assert result.exit_code == 0, result.output
    out = tmp_path / "clf"
    assert "classifier trained on 60 images" in result.output and f"busgen serve --classifier {out}" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "classifier.json", "model.safetensors"]
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["class_names"] == list(CLASSES) and meta["config"]["image_size"] == SIZE
    assert meta["metrics"]["epochs"] == 2 and meta["metrics"]["n_test"] == 30 and 0 <= meta["metrics"]["test_auc"] <= 1
    assert meta["config"]["ema_decay"] > 0 and meta["config"]["schedule"] == "plateau", "the yardstick recipe"
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["datasets"] == ["phantom"] and front["busgen"]["classes"] == list(CLASSES)
    assert "busgen serve --generator default=<generator folder> --classifier <this folder>" in card
    assert "busgen train-classifier --data-dir" in card and "--width 8" in card
    # what `busgen serve --classifier` checks on the driver, then reads in the ingress and the replica
    args = ServeArgs(generators={"default": str(model_dir)}, classifier_dir=str(out))
    assert folder_problems(args) == []
    assert read_classifier_info(str(out)).class_names == list(CLASSES)
    pred = classifier.Predictor.from_checkpoint(out)({"image": make_phantom_arrays(4, SIZE, seed=9)[0]})
    assert pred["probs"].shape == (4, 3)


def test_same_seed_same_weights(data_dir, tmp_path):
    assert train(data_dir, tmp_path / "a").exit_code == 0
    assert train(data_dir, tmp_path / "b").exit_code == 0
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()


def test_a_class_absent_from_the_data_is_one_error_line(data_dir, tmp_path):
    result = train(data_dir, tmp_path / "x", "--classes", "benign,cyst")
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert not (tmp_path / "x").exists()
