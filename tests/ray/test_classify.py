"""Classifier: learns the phantom classes, saves/loads, predicts in batches, trains on Ray Train."""

from __future__ import annotations

import pytest

from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.measure import classify
from busgen.model import classifier

SIZE = 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def phantom_splits():
    train = make_phantom_arrays(150, SIZE, seed=0)
    val = make_phantom_arrays(60, SIZE, seed=1)
    test = make_phantom_arrays(60, SIZE, seed=2)
    return {"train": train, "val": val, "test": test}


@pytest.fixture(scope="module")
def trained(phantom_splits):
    (x, _, y), (xv, _, yv) = phantom_splits["train"], phantom_splits["val"]
    cfg = classifier.ClassifierConfig.small(image_size=SIZE, epochs=6, patience=3, batch_size=32, samples_per_epoch=480)
    model, history = classify.train_classifier(x, y, xv, yv, cfg, CLASSES)
    return model, cfg, history


@pytest.mark.slow
def test_predictor_in_ray_data_map_batches(ray_local, tmp_path, phantom_splits, trained):
    model, cfg, _ = trained
    model_dir = classifier.save_classifier(tmp_path / "clf", model, cfg, CLASSES)
    xt, _, yt = phantom_splits["test"]
    ds = ray_local.data.from_items([{"image": img, "label": lab} for img, lab in zip(xt[:24], yt[:24])])
    out = ds.map_batches(
        classifier.Predictor,
        fn_constructor_args=(str(model_dir),),
        batch_size=8,
        num_cpus=0.5,
        compute=ray_local.data.ActorPoolStrategy(size=1),
    ).take_all()
    assert len(out) == 24 and all(len(r["probs"]) == 3 for r in out)
    assert {r["pred_label"] for r in out} <= set(CLASSES)
