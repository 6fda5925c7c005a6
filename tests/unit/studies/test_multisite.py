"""The multi-site protocol end to end at dry-run size on two phantom sites (devices a and b).

Fast: both targets, foundation + few-shot by LoRA and by full fine-tune at K=5, in-site and
cross-site AUC with paired CIs (utility only). Slow: every variant (target-only, joint, the
device-augmentation arms) with FID, memorisation and membership inference.
Generators are untrained exports (plumbing, not quality: pretraining is tested elsewhere); the
adapters really train (two Ray Train steps each). The bad-input rules are checked before any work.
"""

from __future__ import annotations

import json

import pytest
from helpers.data import write_parquet_dataset

from busgen.core.config import ConfigError, load_config
from busgen.data.phantom import make_phantom_arrays
from busgen.studies.multisite.config import MultisiteConfig
from busgen.studies.multisite.plan import plan
from busgen.studies.multisite.runner import MultisiteError, check_shots, run_multisite
from busgen.testing.models import export_untrained

SIZE = 32


CLASSES = ("benign", "malignant", "normal")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _site(out, seed: int, style: str, n: int = 96):
    images, masks, labels = make_phantom_arrays(n, SIZE, seed=seed, style=style)
    cycle = ["train", "train", "val", "test"]
    return write_parquet_dataset(out, images, masks, labels, f"dev_{style}", [cycle[i % 4] for i in range(n)])


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("multisite")
    a, b = _site(root / "a", 0, "a"), _site(root / "b", 1, "b")
    models = {
        "a": export_untrained(root / "gen_a", size=SIZE, class_names=CLASSES, domains=("dev_a",)),
        "b": export_untrained(root / "gen_b", size=SIZE, class_names=CLASSES, domains=("dev_b",)),
        "joint": export_untrained(root / "gen_j", size=SIZE, class_names=CLASSES, domains=("dev_a", "dev_b")),
    }
    return root, {"a": str(a), "b": str(b)}, {k: str(v) for k, v in models.items()}


def _cfg(root, sites, models, out: str = "report", **kw) -> MultisiteConfig:
    values = {"sites": sites, "targets": None, "models": models, "out": str(root / out), "work_dir": None}
    values |= {"dry_run": True, "joint_dir": None}
    return load_config(MultisiteConfig, "platform/busgen/configs/multisite_cpu.yaml", values=values | kw)


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
        cfg = _cfg(root, site_dirs, models, out=f"report_{target}", targets=[target], methods=[method], **common)
        cfg = cfg.model_copy(update={"work_dir": str(root / "work")})
        run_multisite(cfg)
        runs[target] = cfg, json.loads((cfg.work.parent / f"report_{target}" / "results.json").read_text())
    return runs


def test_k_above_a_class_count_names_the_class_and_its_count(sites):
    root, site_dirs, models = sites
    cfg = _cfg(root, site_dirs, models, shots=[5, 500], dry_run=False)
    with pytest.raises(MultisiteError, match=r"K=500 .*class 'benign' of target 'a' has \d+ training images"):
        check_shots(cfg)


def test_bad_specs_fail_before_any_work(sites):
    root, site_dirs, models = sites
    with pytest.raises(ConfigError, match="exactly two sites"):
        _cfg(root, {"a": site_dirs["a"]}, {})
    with pytest.raises(ConfigError, match=r"targets \['c'\] are not sites"):
        _cfg(root, site_dirs, models, targets=["c"])


def test_plan_lists_each_target_against_the_other_site():
    cfg = MultisiteConfig(sites={"x": "/x", "y": "/y"}, shots=[5, 10], methods=["lora"], augmentation=False)
    keys = [v.key for v in plan(cfg)]
    assert keys[:4] == ["x-target-only-k5", "x-lora-k5", "x-joint-k5", "x-target-only-k10"]
    assert {v.source for v in plan(cfg) if v.target == "y"} == {"x"}
