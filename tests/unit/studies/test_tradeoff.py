"""The CPSample trade-off sweep: the default-strength rule, the sampling plan, and one end-to-end smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.data import write_parquet_dataset

from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator, protect
from busgen.studies.tradeoff import run as tradeoff
from busgen.testing.models import export_untrained


def _row(alpha, auc, fid, mem, mia):
    return {
        "strength": alpha,
        "auc": auc,
        "fid": fid,
        "memorization_rate": mem,
        "dcr": {"pixel": {"auc": mia, "tpr_at_1pct_fpr": 0.0}},
    }


CFG = tradeoff.TradeoffConfig(model="m", data_dir="d", out="o")


def test_default_is_the_cheapest_strength_that_is_private_and_keeps_utility():
    rows = [
        _row(0.0, 0.80, 1.00, 0.020, 0.60),
        _row(0.1, 0.80, 1.02, 0.010, 0.57),
        _row(0.3, 0.795, 1.05, 0.002, 0.53),  # private, utility kept: the pick
        _row(1.0, 0.79, 1.08, 0.000, 0.50),  # also fine, but costs more
    ]
    assert tradeoff.choose_default(rows, CFG) == {
        "strength": 0.3,
        "rule": "smallest alpha meeting all",
        "meets_targets": True,
    }


def test_without_a_private_strength_the_default_is_the_strongest_that_keeps_utility():
    rows = [_row(0.0, 0.80, 1.0, 0.02, 0.60), _row(0.1, 0.80, 1.05, 0.02, 0.59), _row(1.0, 0.70, 2.0, 0.0, 0.5)]
    pick = tradeoff.choose_default(rows, CFG)
    assert pick["strength"] == 0.1 and not pick["meets_targets"]


def test_strengths_must_include_the_unprotected_reference():
    with pytest.raises(ValueError, match="include 0"):
        tradeoff.TradeoffConfig(model="m", data_dir="d", out="o", strengths=[0.1, 0.3])


def test_sample_plan_keeps_class_proportions():
    classes = ["benign", "malignant", "normal"]
    plan = tradeoff.sample_plan(["benign"] * 6 + ["malignant"] * 3 + ["normal"] * 1, classes, 20, 0)
    assert (plan.count("benign"), plan.count("malignant"), plan.count("normal")) == (12, 6, 2)


def test_sweep_writes_rows_report_and_plot(tmp_path, torch_one_thread):
    """Smoke size: untrained generator and classifier; checks the plumbing, not the numbers."""
    images, masks, labels = make_phantom_arrays(36, 32, seed=0)
    splits = ["train"] * 20 + ["val"] * 8 + ["test"] * 8
    labels = [["benign", "malignant", "normal"][i % 3] for i in range(36)]
    data = write_parquet_dataset(tmp_path / "data", images, masks, labels, "phantom", splits)
    model = export_untrained(tmp_path / "model", seed=0, size=32)
    torch.manual_seed(0)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    model_id = generator.load(model, device="cpu").model_id
    protect.save_protector(model, net, {"generator_model_id": model_id, "fit_accuracy": 1.0})
    cfg = tradeoff.TradeoffConfig(
        model=str(model),
        data_dir=str(data),
        out=str(tmp_path / "out"),
        strengths=[0.0, 0.5],
        threshold=0.5,
        n=12,
        steps=2,
        batch_size=12,
        classifier={"epochs": 1, "patience": 1, "batch_size": 8},
        encoder_epochs=1,
    )
    res = tradeoff.run_tradeoff(cfg, log=lambda *_: None)
    assert [r["strength"] for r in res["rows"]] == [0.0, 0.5]
    for r in res["rows"]:
        assert r["img_per_s"] > 0 and 0 <= r["memorization_rate"] <= 1
        assert set(r["dcr"]) == {"pixel", "feature"} and r["dcr"]["pixel"]["n_members"] == 20
        # 16 held-out images: half train the copy encoder, the other half are the attack's non-members
        assert r["dcr"]["pixel"]["n_non_members"] == 8 and r["dcr"]["feature"]["encoder_data"].startswith("half of")
    assert res["default"]["strength"] == 0.5
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["rows"][1]["strength"] == 0.5
    assert "| 0.5 * |" in (out / "tradeoff.md").read_text()
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert np.isfinite(res["rows"][0]["fid"])


def test_sweep_refuses_an_unfitted_classifier_before_measuring_anything(tmp_path):
    """The issue's sweep: a classifier at fit 0.78 was used and the sweep said "meets targets: True"."""
    model = export_untrained(tmp_path / "model", seed=0, size=32)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    protect.save_protector(
        model, net, {"generator_model_id": generator.weights_fingerprint(model), "fit_accuracy": 0.78}
    )
    cfg = tradeoff.TradeoffConfig(model=str(model), data_dir=str(tmp_path / "absent"), out=str(tmp_path / "out"))
    with pytest.raises(protect.ProtectFitError, match="below the floor 0.95"):
        tradeoff.run_tradeoff(cfg, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_real_images_are_compared_at_the_generators_size():
    from busgen.train.protect import to_size

    images = np.zeros((2, 64, 64), np.uint8)
    assert to_size(images, 32).shape == (2, 32, 32) and to_size(images, 64) is images
