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
