"""The multi-site protocol end to end at dry-run size on two phantom sites (devices a and b).

Fast: both targets, foundation + few-shot by LoRA and by full fine-tune at K=5 and the real T+S
control, in-site and cross-site AUC with paired CIs (utility only). Slow: every variant (target-only,
joint, the device-augmentation arms, each set against real T+S) with FID, memorisation and
membership inference.
Generators are untrained exports (plumbing, not quality: pretraining is tested elsewhere); the
adapters really train (two Ray Train steps each). The bad-input rules are checked before any work.
"""

from __future__ import annotations

import json

import pytest
from helpers.multisite import make_sites, multisite_config

from busgen.data.dataset import read_table
from busgen.studies.multisite.runner import run_multisite
from busgen.train.adapt import support_hashes

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.slow,
]  # slow: the multi-site protocol end to end (minutes)


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("multisite"))


@pytest.fixture(scope="module")
def dry_run(sites, ray_local):
    """Utility only, two runs in one work folder: target a adapted by LoRA, target b by a full fine-tune.

    (Each adapter is a Ray Train run; the slow test runs the whole matrix.) The joint generator is
    "not trained yet": no model and no pretrain section, so its variants are listed as not run.
    """
    root, site_dirs, models = sites
    off = {"enabled": False}
    common = dict(variants=["foundation", "joint"], augmentation=False, fidelity=off, privacy=off, pretrain=None)
    models = {k: v for k, v in models.items() if k != "joint"} | {"joint": str(root / "joint_not_yet")}
    runs = {}
    for target, method in (("a", "lora"), ("b", "full")):
        cfg = multisite_config(
            root, site_dirs, models, out=f"report_{target}", targets=[target], methods=[method], **common
        )
        cfg = cfg.model_copy(update={"work_dir": str(root / "work")})
        run_multisite(cfg)
        runs[target] = cfg, json.loads((cfg.work.parent / f"report_{target}" / "results.json").read_text())
    return runs


@pytest.mark.parametrize("target, source, method", [("a", "b", "lora"), ("b", "a", "full")])
def test_each_target_is_adapted_from_the_other_site_and_tested_in_site_and_cross_site(dry_run, target, source, method):
    cfg, record = dry_run[target]
    rows = record["rows"]
    assert {r["target"] for r in rows} == {target} and {r["source"] for r in rows} == {source}
    assert {r["variant"] for r in rows} == {"real only", method, "real T+S"}
    assert {(r["shots"], r["val_per_class"]) for r in rows} == {("5", "5"), ("all", "all")}  # real T+S: K=all
    for r in rows:
        assert 0 <= r["auc_in"] <= 1 and 0 <= r["auc_cross"] <= 1  # T's test split and S's test split
        if r["variant"] == method:
            assert r["ci_low_in"] <= r["delta_in"] <= r["ci_high_in"]
            assert r["ci_low_cross"] <= r["delta_cross"] <= r["ci_high_cross"]
    assert record["pending"] == [f"{target}-joint-k5 (generator 'joint' missing)"]
    out = cfg.work.parent / f"report_{target}"
    report = (out / "report.md").read_text()
    assert f"| {target} ({source}) | {method} | 5 |" in report and "Not run" in report
    assert f"| {target} ({source}) | real T+S | all | real |" in report and "K images per class of T's val" in report
    for name in ("auc_vs_k.png", "samples_a.png", "samples_b.png", "results.csv"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_every_variant_with_fidelity_and_privacy(sites, ray_local):
    root, site_dirs, models = sites
    cfg = multisite_config(root, site_dirs, models, out="report_all")
    run_multisite(cfg)
    rows = json.loads((cfg.work.parent / "results.json").read_text())["rows"]
    for target, source in (("a", "b"), ("b", "a")):
        mine = [r for r in rows if r["target"] == target]
        assert {r["source"] for r in mine} == {source}
        variants = {r["variant"] for r in mine}
        assert {
            "real only",
            "target-only",
            "lora",
            "full",
            "joint",
            f"aug:{source}",
            "aug:all",
            f"aug:{target}",
            "real T+S",
        } <= variants
        for r in mine:
            if r["variant"] in ("target-only", "lora", "full", "joint"):
                assert r["fid"] is not None and 0 <= r["memorization_rate"] <= 1 and 0 <= r["mia_auc"] <= 1
            if r["variant"].startswith("aug:") and r["arm"] != "real":  # paired with the real T+S control
                assert r["ci_low_ts_cross"] <= r["delta_ts_cross"] <= r["ci_high_ts_cross"]


def test_support_set_is_seeded_recorded_and_the_same_for_every_arm(dry_run):
    for target, method in (("a", "lora"), ("b", "full")):
        cfg, _ = dry_run[target]
        kreal = read_table(cfg.work / "kreal" / f"{target}-k5").to_pylist()
        train = {r["sha256"] for r in kreal if r["split"] == "train"}
        assert len(train) == 2 * 5  # K per class, the suite's two classes
        assert support_hashes(cfg.work / "adapted" / f"{target}-{method}-k5") == train  # the adapter's own record
        val = [r["label"] for r in kreal if r["split"] == "val"]  # early stopping / threshold: K per class at most
        assert (
            max(val.count(c) for c in cfg.classes) <= 5
            and not {r["sha256"] for r in kreal if r["split"] == "val"} & train
        )
        assert {r["split"] for r in kreal} == {"train", "val", "val_heldout", "test"}  # T's whole val/test split too


def test_a_finished_run_is_resumed_not_repeated(dry_run):
    cfg, _ = dry_run["a"]
    timings = json.loads((cfg.work / "timings.json").read_text())
    again = run_multisite(cfg)  # every stage's output exists: nothing trains or evaluates again
    assert json.loads((cfg.work / "timings.json").read_text()) == timings
    assert again["rows"] == 3  # real only, the adapted variant, real T+S
