"""What ``busgen serve`` checks on the driver before Serve starts: CPUs that fit the machine, and the folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.models import export_untrained_tiny, save_random_classifier
from helpers.serve import write_gallery, write_reference

from busgen.commands.serve import ServeRun, deployment_overrides
from busgen.core.cli_args import config_from_words
from busgen.serve.config import ServeArgs
from busgen.serve.gallery import ImageSet
from busgen.serve.preflight import (
    DEFAULT_CPUS,
    HEADROOM,
    ResourceError,
    check_folders,
    fit_cpus,
    folder_problems,
    plan_cpus,
)

pytestmark = pytest.mark.timeout(120)

ALL = {"generator": 1, "classifier": 1, "ingress": 1, "data": 1}
BIG_SEED = 2089621353774915728  # the seed of issue 31: JavaScript shows it as ...915800


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 8, 64])
def test_the_plan_fits_every_machine_with_headroom(cpus):
    plan = plan_cpus(cpus, ALL)
    assert set(plan) == set(ALL) and all(v > 0 for v in plan.values())
    assert sum(plan.values()) <= cpus * (1 - HEADROOM) + 1e-9
    if cpus >= 4:  # room for the defaults: they are kept
        assert plan == DEFAULT_CPUS
    else:  # scaled down together: the generator still gets the most
        assert plan["generator"] == max(plan.values()) and plan["data"] < plan["ingress"]


def test_replicas_count_and_absent_deployments_are_not_planned():
    plan = plan_cpus(2, {"generator": 2, "ingress": 1})
    assert set(plan) == {"generator", "ingress"}
    assert 2 * plan["generator"] + plan["ingress"] <= 2 * (1 - HEADROOM)


def test_requested_cpus_are_kept_and_the_rest_fit_around_them():
    plan = plan_cpus(2, ALL, {"generator": 1.0})
    assert plan["generator"] == 1.0
    assert sum(plan.values()) <= 2 * (1 - HEADROOM) + 1e-9
    # requests that eat the headroom: the others still fit the machine itself
    plan = plan_cpus(2, ALL, {"generator": 1.5, "classifier": 0.4})
    assert sum(plan.values()) <= 2 + 1e-9 and plan["ingress"] > 0


def test_requests_beyond_the_machine_fail_with_one_sentence():
    with pytest.raises(ResourceError, match=r"exceed the 2 CPUs of this machine") as err:
        plan_cpus(2, ALL, {"generator": 2, "classifier": 1})
    assert "\n" not in str(err.value) and "generator 2" in str(err.value)
    with pytest.raises(ResourceError, match="leave no room"):
        plan_cpus(2, ALL, {"generator": 2})
    with pytest.raises(ResourceError, match="data, which will not run"):
        plan_cpus(2, {"generator": 1, "ingress": 1}, {"data": 0.1})


def test_fit_cpus_plans_only_what_the_operator_left_unset():
    args = ServeArgs(generators={"a": "/m"}, classifier_dir="/c", generator={"num_cpus": 0.5})
    fitted = fit_cpus(args, 2)
    assert fitted.generator.num_cpus == 0.5, "asked for: kept"
    assert fitted.classifier.num_cpus < 1 and fitted.ingress.num_cpus < 0.5
    assert fitted.generator.max_batch_size == args.generator.max_batch_size, "only the CPUs change"
    big = fit_cpus(ServeArgs(generators={"a": "/m"}), 16)
    assert big.generator.num_cpus == 1.0 and big.ingress.num_cpus == 0.5
    with pytest.raises(ResourceError):
        fit_cpus(ServeArgs(generators={"a": "/m"}, ingress_num_cpus=4), 2)


def test_the_serve_command_takes_per_deployment_resources():
    words = ["--generator", "base=/m", "--num-cpus", "generator=1,classifier=0.5", "--num-gpus", "generator=1"]
    cfg, _ = config_from_words(ServeRun, words)
    overrides = deployment_overrides(cfg)
    assert overrides == {"generator": {"num_cpus": 1.0, "num_gpus": 1.0}, "classifier": {"num_cpus": 0.5}}
    with pytest.raises(ValueError, match="unknown deployment gpu"):
        config_from_words(ServeRun, ["--generator", "base=/m", "--num-cpus", "gpu=1"])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    return {
        "generator": str(export_untrained_tiny(root / "g0", seed=0, size=32)),
        "classifier": save_random_classifier(root / "clf"),
        "reference": str(write_reference(root / "reference.parquet")),
        "gallery": str(write_gallery(root / "synthetic")),
        "root": root,
    }


def test_good_folders_pass(folders):
    args = ServeArgs(
        generators={"base": folders["generator"]},
        classifier_dir=folders["classifier"],
        reference_parquet=folders["reference"],
        galleries={"synthetic": folders["gallery"]},
        study_dir=str(folders["root"] / "study"),
    )
    assert folder_problems(args) == []
    check_folders(args)


def test_every_bad_folder_is_named_in_one_error_line(folders):
    root = folders["root"]
    (root / "empty").mkdir(exist_ok=True)
    (root / "broken-clf").mkdir(exist_ok=True)
    (root / "broken-clf" / "classifier.json").write_text("{not json")
    (root / "broken-clf" / "model.pt").write_bytes(b"")
    (root / "notes.parquet").write_text("not parquet")
    args = ServeArgs(
        generators={"base": folders["generator"], "gone": str(root / "nope"), "plain": str(root / "empty")},
        classifier_dir=folders["gallery"],  # a folder, but not a classifier
        classifiers={"broken": str(root / "broken-clf")},
        reference_parquet=str(root / "missing.parquet"),
        galleries={"synthetic": folders["generator"], "junk": str(root / "notes.parquet")},
    )
    problems = folder_problems(args)
    expected = [
        "generator 'gone': no folder",
        "generator 'plain'",
        "classifier 'default'",
        "classifier 'broken'",
        "reference: no file or folder",
        "gallery 'synthetic': no Parquet files",
        "gallery 'junk'",
    ]
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(start), (problem, start)
    with pytest.raises(ValueError) as err:
        check_folders(args)
    assert "\n" not in str(err.value) and "no busgen.json" in str(err.value)


def test_a_generator_folder_without_the_fields_is_not_a_model(folders):
    bad = folders["root"] / "half-model"
    bad.mkdir(exist_ok=True)
    (bad / "busgen.json").write_text(json.dumps({"class_names": ["benign"]}))
    (problem,) = folder_problems(ServeArgs(generators={"half": str(bad)}))
    assert problem.startswith("generator 'half'") and "re-export" in problem
    (bad / "busgen.json").write_text(
        json.dumps(json.loads((Path(folders["generator"]) / "busgen.json").read_text()) | {"kind": "adapter"})
    )
    (problem,) = folder_problems(ServeArgs(generators={"half": str(bad)}))
    assert "lacks adapter" in problem, "an adapter without its fields is not a model either"


def test_gallery_seeds_travel_as_exact_text(tmp_path):
    gallery = ImageSet(write_gallery(tmp_path / "gal", first_seed=BIG_SEED))
    item = gallery.page(None, None, 0, 4)["items"][0]
    assert item["seed"] == str(BIG_SEED), "a JSON number would round to ...915800 in the browser"
    assert json.loads(json.dumps(item))["seed"] == "2089621353774915728"
