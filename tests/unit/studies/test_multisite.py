"""The multi-site protocol's plan and its bad-input rules, checked before any work (the runs: tests/e2e)."""

from __future__ import annotations

import pytest
from helpers.multisite import make_sites, multisite_config

from busgen.core.config import ConfigError
from busgen.studies.multisite.config import MultisiteConfig
from busgen.studies.multisite.plan import plan
from busgen.studies.multisite.runner import MultisiteError, check_shots

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("multisite"))


def test_k_above_a_class_count_names_the_class_and_its_count(sites):
    root, site_dirs, models = sites
    cfg = multisite_config(root, site_dirs, models, shots=[5, 500], dry_run=False)
    with pytest.raises(MultisiteError, match=r"K=500 .*class 'benign' of target 'a' has \d+ training images"):
        check_shots(cfg)


def test_bad_specs_fail_before_any_work(sites):
    root, site_dirs, models = sites
    with pytest.raises(ConfigError, match="exactly two sites"):
        multisite_config(root, {"a": site_dirs["a"]}, {})
    with pytest.raises(ConfigError, match=r"targets \['c'\] are not sites"):
        multisite_config(root, site_dirs, models, targets=["c"])


def test_plan_lists_each_target_against_the_other_site():
    cfg = MultisiteConfig(sites={"x": "/x", "y": "/y"}, shots=[5, 10], methods=["lora"], augmentation=False)
    keys = [v.key for v in plan(cfg)]
    assert keys[:4] == ["x-target-only-k5", "x-lora-k5", "x-joint-k5", "x-target-only-k10"]
    assert {v.source for v in plan(cfg) if v.target == "y"} == {"x"}


def test_each_target_has_a_real_t_plus_s_control_without_a_generator():
    from busgen.studies.multisite.plan import REAL_TS, generators_needed

    cfg = MultisiteConfig(sites={"x": "/x", "y": "/y"}, shots=[5], methods=["lora"], variants=["foundation"])
    pairs = [v for v in plan(cfg) if v.is_real_pair]
    assert [(v.target, v.source, v.label, v.shots, v.generator) for v in pairs] == [
        ("x", "y", REAL_TS, "all", None),
        ("y", "x", REAL_TS, "all", None),
    ]
    assert [v.key for v in pairs] == ["x-real_T_S-kall", "y-real_T_S-kall"]
    assert generators_needed(cfg, plan(cfg)) == ["x", "y", "joint"]  # the control needs no generator
    off = cfg.model_copy(update={"real_target_source": False})
    assert not any(v.is_real_pair for v in plan(off))


def test_only_integer_k_arms_cap_their_validation():
    cfg = MultisiteConfig(sites={"x": "/x", "y": "/y"}, shots=[5, "all"], methods=["lora"])
    assert {(v.shots, v.caps_val) for v in plan(cfg)} == {(5, True), ("all", False)}
    assert {v.key for v in plan(cfg) if v.is_augmentation} >= {"x-aug_y-kall", "x-aug_all-kall"}  # keys as before


@pytest.mark.parametrize("name", ["multisite_cpu", "multisite_gpu"])
def test_both_shipped_protocols_run_the_real_t_plus_s_control(name):
    from busgen.core.cli_args import resolve_config_path
    from busgen.core.config import load_config

    cfg = load_config(MultisiteConfig, resolve_config_path(name))
    assert cfg.real_target_source and cfg.augmentation
    assert cfg.utility.external_split in ("test", None)
