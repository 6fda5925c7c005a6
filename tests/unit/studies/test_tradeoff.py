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


def _row(s, aucs, fid, mem, mia, kid=0.010):
    return {
        "strength": s,
        "auc": float(np.mean(aucs)),
        "aucs": list(aucs),
        "fid": fid,
        "kid": kid,
        "memorization_rate": mem,
        "dcr": {"pixel": {"auc": mia, "tpr_at_1pct_fpr": 0.0}},
    }


CFG = tradeoff.TradeoffConfig(model="m", data_dir="d", out="o")
BASE = (0.80, 0.82, 0.78, 0.81, 0.79)  # 5 classifier seeds: mean 0.80, sd 0.016 -> 80%-power MDE about 0.034


def test_default_is_the_smallest_strength_that_is_private_and_keeps_utility():
    rows = [
        _row(0.0, BASE, 1.00, 0.020, 0.60),
        _row(100, BASE, 1.02, 0.010, 0.57),
        _row(300, [a - 0.02 for a in BASE], 1.05, 0.002, 0.53),  # private; AUC 0.02 down: within the MDE
        _row(1000, BASE, 1.08, 0.000, 0.50),  # also fine, but a stronger push
    ]
    pick = tradeoff.choose_default(rows, CFG)
    assert (pick["strength"], pick["rule"], pick["meets_targets"]) == (300, "smallest s meeting all", True)


def test_an_auc_drop_beyond_the_detectable_effect_or_fid_or_kid_over_10pct_loses_utility():
    base = _row(0.0, BASE, 1.00, 0.020, 0.60)
    assert not tradeoff.keeps_utility(_row(1, [a - 0.06 for a in BASE], 1.0, 0, 0.5), base, CFG)  # beyond the MDE
    assert not tradeoff.keeps_utility(_row(1, BASE, 1.11, 0, 0.5), base, CFG)  # FID +11%
    assert not tradeoff.keeps_utility(_row(1, BASE, 1.0, 0, 0.5, kid=0.0125), base, CFG)  # KID +25% and +0.0025
    assert tradeoff.keeps_utility(_row(1, BASE, 1.0, 0, 0.5, kid=0.0105), base, CFG)  # KID +5%


def test_without_a_private_strength_the_default_is_the_least_memorising_that_keeps_utility():
    rows = [
        _row(0.0, BASE, 1.0, 0.05, 0.60),
        _row(100, BASE, 1.05, 0.02, 0.59),
        _row(300, BASE, 1.08, 0.01, 0.58),
        _row(1000, [0.6] * 5, 2.0, 0.0, 0.5),
    ]
    pick = tradeoff.choose_default(rows, CFG)
    assert pick["strength"] == 300 and not pick["meets_targets"] and pick["utility_kept"][1000] is False


def test_a_train_subset_keeps_the_held_out_splits_whole(tmp_path):
    from busgen.data.dataset import read_arrays
    from busgen.studies.tradeoff.subset import train_subset_rows, write_train_subset

    rows = train_subset_rows(["a"] * 5 + ["b"] * 2 + ["c"] * 9, per_class=3, seed=0)
    assert len(rows) == 8 and list(rows) == sorted(rows) and set(rows[:3]) <= set(range(5))
    images, masks, _ = make_phantom_arrays(30, 32, seed=0)
    labels = [["benign", "malignant", "normal"][i % 3] for i in range(30)]
    src = write_parquet_dataset(tmp_path / "src", images, masks, labels, "phantom", ["train"] * 24 + ["test"] * 6)
    info = write_train_subset(src, tmp_path / "sub", per_class=2, seed=0, repeat=3)
    assert info["counts"]["train"] == {"benign": 6, "malignant": 6, "normal": 6} and info["subset"]["repeat"] == 3
    assert len(read_arrays(tmp_path / "sub", split="test")[0]) == 6
    assert len({im.tobytes() for im in read_arrays(tmp_path / "sub", split="train")[0]}) == 6


def test_the_nearest_pair_grid_is_drawn_per_strength(tmp_path):
    from busgen.studies.tradeoff.report import nn_grid

    img = np.zeros((32, 32), np.uint8)
    nn_grid({0.0: [(img, img, 1.0)] * 2, 1000.0: [(img, img + 9, 0.5)]}, tmp_path / "nn.png", 1000.0)
    assert (tmp_path / "nn.png").stat().st_size > 1000


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
        classifier_seeds=2,
        encoder_epochs=1,
    )
    res = tradeoff.run_tradeoff(cfg, log=lambda *_: None)
    assert [r["strength"] for r in res["rows"]] == [0.0, 0.5]
    for r in res["rows"]:
        assert r["img_per_s"] > 0 and 0 <= r["memorization_rate"] <= 1
        assert set(r["dcr"]) == {"pixel", "feature"} and r["dcr"]["pixel"]["n_members"] == 20
        # 16 held-out images: half train the copy encoder, the other half are the attack's non-members
        assert r["dcr"]["pixel"]["n_non_members"] == 8 and r["dcr"]["feature"]["encoder_data"].startswith("half of")
    assert res["default"]["strength"] == 0.5 and len(res["rows"][1]["aucs"]) == 2
    assert res["rule"] == tradeoff.DEFAULT_RULE
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["rows"][1]["strength"] == 0.5
    assert "| 0.5 * |" in (out / "tradeoff.md").read_text()
    assert (out / "tradeoff.png").stat().st_size > 1000 and (out / "nn.png").stat().st_size > 1000
    assert "Rule for the default (fixed before the run)" in (out / "tradeoff.md").read_text()
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
