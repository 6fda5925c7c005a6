"""The multi-site instrument, without training: what each arm trains, validates and is tested on (issue 26).

* a K-shot arm validates on at most K images per class of T's val split (seeded, no support image);
* the cross-site test is S's test split alone, whatever ``utility.external_split`` says;
* the real T+S control trains on T's and S's train splits and is tested like every other arm.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest
from helpers.multisite import multisite_config, site

from busgen.core.config import ConfigError
from busgen.data import schema
from busgen.data.dataset import read_table
from busgen.eval.suites import REAL_TEST
from busgen.eval.trials import UtilityTrialConfig
from busgen.eval.utility.grid import trial_base
from busgen.measure.arrays import labelled
from busgen.studies.multisite.config import ALL
from busgen.studies.multisite.plan import REAL_TS, plan
from busgen.studies.multisite.runner import VAL_REST, MultisiteError, Stages, cap_val

CLASSES = ["benign", "malignant"]


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    return root, {"a": str(site(root / "a", 0, "a")), "b": str(site(root / "b", 1, "b"))}


def stages(root, site_dirs, tmp_path, **kw) -> Stages:
    cfg = multisite_config(root, site_dirs, {}, dry_run=False, work_dir=str(tmp_path / "work"), pretrain=None, **kw)
    return Stages(cfg)


def variant(st: Stages, target: str, label: str, shots):
    return next(v for v in plan(st.cfg) if v.target == target and v.label == label and v.shots == shots)


def sha(path: str, split: str | None) -> set[str]:
    """The sha256 of a split's rows of the task's classes (the phantom sites hold a third class too)."""
    table = read_table(path, [schema.SHA256], split=split, classes=CLASSES)
    return set(table.column(schema.SHA256).to_pylist())


def trial(st: Stages, v, real_dir: str) -> UtilityTrialConfig:
    """The utility trial `run_suite` would start for this variant (what it trains, validates and tests on)."""
    model, syn = (None, None) if v.is_real_pair else ("/model", "/synthetic")  # never opened here
    scfg = st.suite_config(v, real_dir, model, syn)
    return UtilityTrialConfig(**trial_base(scfg, real_dir, st.work / "artifacts", syn), seed=0)


# ----------------------------------------------------------------------------- K-shot validation


def test_cap_val_keeps_at_most_k_per_class_seeded_and_never_a_support_image():
    hashes = [f"{i:03d}" for i in range(30)]
    val = pa.table(
        {
            schema.SHA256: hashes,
            schema.LABEL: ["benign"] * 20 + ["malignant"] * 10,
            schema.SPLIT: ["val"] * 30,
        }
    )
    support = {"000", "001", "002"}
    capped = cap_val(val, 4, CLASSES, seed=0, exclude=support)
    kept = [r for r in capped.to_pylist() if r[schema.SPLIT] == "val"]
    assert Counter(r[schema.LABEL] for r in kept) == {"benign": 4, "malignant": 4}
    assert not {r[schema.SHA256] for r in kept} & support
    assert {r[schema.SPLIT] for r in capped.to_pylist()} == {"val", VAL_REST}  # the rest: relabelled, not dropped
    assert capped.num_rows == val.num_rows
    assert capped.equals(cap_val(val, 4, CLASSES, seed=0, exclude=support))  # a fixed, seeded subset
    assert cap_val(val, 50, CLASSES, 0, set()).column(schema.SPLIT).to_pylist() == ["val"] * 30  # fewer than K: all


@pytest.mark.parametrize("shots", [2, 5])
def test_a_k_shot_arm_validates_on_at_most_k_images_per_class(sites, tmp_path, shots):
    root, site_dirs = sites
    st = stages(root, site_dirs, tmp_path, shots=[shots, ALL])
    real_dir, support = st.kreal("a", shots)
    t = trial(st, variant(st, "a", "lora", shots), real_dir)
    _, y_val = labelled(t.real_dir, "val", CLASSES)  # what `busgen.eval.trials` early-stops and thresholds on
    assert max(Counter(y_val.tolist()).values()) <= shots and len(set(y_val.tolist())) == 2
    assert not sha(real_dir, "val") & support  # disjoint from the K training shots
    assert sha(real_dir, "val") | sha(real_dir, VAL_REST) == sha(site_dirs["a"], "val")  # the rest kept aside
    assert sha(real_dir, "train") == support and len(support) == 2 * shots
    # the same subset for every arm of (T, K): a second K-real dataset is the same rows
    again = stages(root, site_dirs, tmp_path / "again", shots=[shots, ALL]).kreal("a", shots)[0]
    assert sha(again, "val") == sha(real_dir, "val")


def test_k_all_arms_validate_on_the_whole_val_split(sites, tmp_path):
    root, site_dirs = sites
    st = stages(root, site_dirs, tmp_path, shots=[ALL])
    real_dir, _ = st.kreal("a", ALL)
    assert sha(real_dir, "val") == sha(site_dirs["a"], "val") and not sha(real_dir, VAL_REST)


def test_a_k_shot_suite_keeps_the_unseen_val_rows_as_fidelity_and_privacy_reference(sites, tmp_path):
    root, site_dirs = sites
    st = stages(root, site_dirs, tmp_path, shots=[5, ALL])
    kshot = st.suite_config(variant(st, "a", "target-only", 5), "/x", "/m", "/s")
    assert VAL_REST in kshot.fidelity.real_splits and VAL_REST in kshot.privacy.heldout_splits
    full = st.suite_config(variant(st, "a", "target-only", ALL), "/x", "/m", "/s")
    assert VAL_REST not in full.fidelity.real_splits


def test_a_work_dir_of_the_earlier_protocol_is_refused(sites, tmp_path):
    root, site_dirs = sites
    st = stages(root, site_dirs, tmp_path, shots=[5])
    st.kreal("a", 5)
    marker = tmp_path / "work" / "kreal" / "a-k5" / "kreal.json"
    record = json.loads(marker.read_text())
    del record["val_per_class"]
    marker.write_text(json.dumps(record))
    with pytest.raises(MultisiteError, match="earlier protocol .*whole val split.*delete"):
        st.kreal("a", 5)


# ----------------------------------------------------------------------------- cross-site test


@pytest.mark.parametrize("external_split", ["test", None])
def test_no_source_train_row_reaches_the_cross_site_test(sites, tmp_path, external_split):
    root, site_dirs = sites
    utility = {"ratios": [0, 4], "external_split": external_split}
    st = stages(root, site_dirs, tmp_path, shots=[5, ALL], utility=utility)
    for v in plan(st.cfg):
        if v.target != "a":
            continue
        t = trial(st, v, site_dirs["a"])
        path, split = t.evaluation_sets()["b"]  # S's test set as the trial reads it
        tested = sha(path, split)
        assert tested == sha(site_dirs["b"], "test"), v.key
        assert not tested & (sha(site_dirs["b"], "train") | sha(site_dirs["b"], "val")), v.key
        assert t.evaluation_sets()[REAL_TEST] == (site_dirs["a"], "test")


def test_an_external_split_other_than_test_or_null_is_refused_with_the_fix(sites):
    root, site_dirs = sites
    with pytest.raises(ConfigError, match=r"external_split='val'.*set utility.external_split to 'test' or null"):
        multisite_config(root, site_dirs, {}, utility={"external_split": "val"})


# ----------------------------------------------------------------------------- the real T+S control


def test_the_real_pair_trains_on_both_sites_train_splits_and_validates_and_tests_on_t(sites, tmp_path):
    root, site_dirs = sites
    st = stages(root, site_dirs, tmp_path, shots=[5, ALL])
    v = variant(st, "a", REAL_TS, ALL)
    real_dir = st.real_pair("a", "b")
    train = sha(real_dir, "train")
    assert train == sha(site_dirs["a"], "train") | sha(site_dirs["b"], "train")
    assert sha(real_dir, "val") == sha(site_dirs["a"], "val")
    assert sha(real_dir, "test") == sha(site_dirs["a"], "test")
    scfg = st.suite_config(v, real_dir, None, None)
    assert scfg.utility.ratios == [0] and not scfg.utility.synthetic_only  # real images only: one arm
    assert not scfg.fidelity.enabled and not scfg.privacy.enabled
    tested = sha(*trial(st, v, real_dir).evaluation_sets()["b"])
    assert not tested & train  # S's train rows train it; only S's test rows test it


# ----------------------------------------------------------------------------- report


def _rows() -> list[dict]:
    """Rows of one target x with source y: real only at K=5, the augmentation arms, the real T+S control."""
    common = {"target": "x", "source": "y"}
    aug = {"arm": "real+syn x4", "headline": True, "shots": "all", "val_per_class": "all"}
    return [
        {**common, "variant": "real only", "arm": "real", "shots": "5", "auc_in": 0.6, "auc_cross": 0.5}
        | {"val_per_class": "5"},
        {**common, "variant": "aug: real T only", "arm": "real", "shots": "all", "auc_in": 0.7, "auc_cross": 0.55}
        | {"val_per_class": "all"},
        {**common, **aug, "variant": "aug:y", "auc_in": 0.68, "auc_cross": 0.66}
        | {"delta_cross": 0.11, "ci_low_cross": 0.02, "ci_high_cross": 0.2}
        | {"delta_ts_cross": -0.04, "ci_low_ts_cross": -0.1, "ci_high_ts_cross": 0.03}
        | {"delta_ts_in": 0.0, "ci_low_ts_in": -0.05, "ci_high_ts_in": 0.05},
        {**common, "variant": REAL_TS, "arm": "real", "shots": "all", "auc_in": 0.69, "auc_cross": 0.70}
        | {"val_per_class": "all"},
    ]


def test_the_report_sets_augmentation_against_the_real_pair_and_states_the_validation(tmp_path):
    from busgen.studies.multisite import report
    from busgen.studies.multisite.config import MultisiteConfig

    cfg = MultisiteConfig(sites={"x": "/x", "y": "/y"}, targets=["x"], shots=[5, ALL], out=str(tmp_path))
    rows = _rows()
    (line,) = [x for x in report.target_check(cfg, rows) if "aug:y" in x]
    assert "over real T only" in line and "vs real T+S (cross-site AUC 0.700): Δ -0.040 [-0.100, +0.030]" in line
    assert "**does not beat** S's labelled images" in line
    (text,) = report.instrument(cfg, rows)
    assert "K images per class of T's val split" in text and "real T+S = one classifier" in text
    assert any(f"| x (y) | {REAL_TS} | all | real | 0.690 |" in x for x in report.table(rows))
    assert report.auc_vs_k(cfg, rows, tmp_path).stat().st_size > 0  # in-site vs K + the cross-site panel


def test_rows_of_an_earlier_protocol_render_without_the_new_statements():
    from busgen.studies.multisite import report
    from busgen.studies.multisite.config import MultisiteConfig

    cfg = MultisiteConfig(sites={"x": "/x", "y": "/y"}, targets=["x"])
    old = [{k: v for k, v in r.items() if "ts_" not in k and k != "val_per_class"} for r in _rows()[:3]]
    assert report.instrument(cfg, old) == []
    assert not any("real T+S" in x for x in report.target_check(cfg, old))
