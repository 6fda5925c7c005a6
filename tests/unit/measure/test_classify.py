"""Classifier: learns the phantom classes, embeds, saves/loads and predicts in batches (in-process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busgen.data.imageio import encode_png
from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.measure import classify, metrics
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


def test_classifier_learns_phantom_classes_above_chance(phantom_splits, trained):
    model, _, history = trained
    xt, _, yt = phantom_splits["test"]
    probs = classifier.predict_proba(model, xt)
    assert probs.shape == (len(xt), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    rep = metrics.classification_report(yt, probs, CLASSES, n_boot=50)
    assert rep["accuracy"] > 0.6  # chance is 1/3
    assert rep["auc"]["value"] > 0.8  # malignant vs rest
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_embed_gives_penultimate_features(phantom_splits, trained):
    model, cfg, _ = trained
    feats = classifier.embed(model, phantom_splits["test"][0][:10])
    assert feats.shape == (10, cfg.width * 8) and feats.dtype == np.float32


def test_save_load_roundtrip_and_predictor(tmp_path, phantom_splits, trained):
    model, cfg, history = trained
    xt = phantom_splits["test"][0][:8]
    out = classifier.save_classifier(tmp_path / "clf", model, cfg, CLASSES, {"history": history})
    assert (out / classifier.META_FILE).is_file() and (out / classifier.WEIGHTS_FILE).is_file()
    loaded, cfg2, names = classifier.load_classifier(out)
    assert cfg2 == cfg and names == list(CLASSES)
    np.testing.assert_allclose(classifier.predict_proba(loaded, xt), classifier.predict_proba(model, xt), atol=1e-6)
    pred = classifier.Predictor.from_checkpoint(out)({"image": xt})
    assert pred["probs"].shape == (8, 3) and pred["pred"].dtype == np.int64
    # Parquet rows carry PNG bytes; the predictor decodes them.
    from_png = classifier.Predictor.from_checkpoint(out)({"image": np.array([encode_png(i) for i in xt], dtype=object)})
    np.testing.assert_allclose(from_png["probs"], pred["probs"], atol=1e-6)


def test_weights_are_safetensors_and_older_model_pt_folders_still_load(tmp_path, phantom_splits, trained):
    from safetensors.torch import load_file

    model, cfg, _ = trained
    xt = phantom_splits["test"][0][:8]
    out = classifier.save_classifier(tmp_path / "clf", model, cfg, CLASSES)
    assert classifier.WEIGHTS_FILE == "model.safetensors" and not (out / "model.pt").exists()
    assert load_file(str(out / classifier.WEIGHTS_FILE)).keys() == model.state_dict().keys()
    # a folder saved before safetensors: classifier.json + a torch state_dict
    torch.save(model.state_dict(), out / "model.pt")
    (out / classifier.WEIGHTS_FILE).unlink()
    assert classifier.weights_file(out).name == "model.pt"
    legacy, _, _ = classifier.load_classifier(out)
    np.testing.assert_array_equal(classifier.predict_proba(legacy, xt), classifier.predict_proba(model, xt))
    # saving again replaces the legacy file, so one folder never holds two different weights
    classifier.save_classifier(out, legacy, cfg, CLASSES)
    assert classifier.weights_file(out).name == classifier.WEIGHTS_FILE and not (out / "model.pt").exists()
    (out / classifier.WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="busgen train-classifier"):
        classifier.load_classifier(out)


def test_augment_is_seeded_and_keeps_range():
    x = torch.linspace(-1, 1, 2 * 32 * 32).reshape(2, 1, 32, 32)
    a = classify.augment_batch(x, torch.Generator().manual_seed(0))
    b = classify.augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1 and not torch.equal(a, x)


def test_mix_weights_give_each_set_its_ratio():
    real, syn = np.array([0] * 80 + [1] * 20), np.array([0, 1] * 100)
    w, per_epoch = classify.mix_weights([real, syn], [1.0, 2.0])
    assert per_epoch == 300  # n_real + 2 * n_real
    assert w[:100].sum() / w.sum() == pytest.approx(1 / 3)
    # class-balanced inside the real set despite the 80/20 imbalance
    assert w[:80].sum() == pytest.approx(w[80:100].sum())
