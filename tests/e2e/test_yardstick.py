"""The stable yardstick: EMA weights, flip averaging, seed-and-case bootstrap, noise floor; recipes end to end.

The end-to-end suite (platform/busgen/configs/recipes_ci.yaml) runs every recipe arm and scaling
point as Ray Tune trials on 32 px phantoms with an untrained generator: it checks the
plumbing, not what synthetic data is worth.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from helpers.data import write_parquet_dataset
from helpers.models import export_untrained_tiny

from busgen.core.config import load_config
from busgen.data.phantom import make_phantom_arrays
from busgen.eval import runner as evaluate
from busgen.eval.suites import SuiteConfig

SIZE = 32


pytestmark = [pytest.mark.usefixtures("torch_one_thread"), pytest.mark.slow]  # slow: every recipe arm as a Tune grid


def _real_set(out, n: int, seed: int):
    images, masks, labels = make_phantom_arrays(n, SIZE, seed=seed)
    cycle = ["train", "train", "val", "test"]
    return write_parquet_dataset(out, images, masks, labels, "phantom_a", [cycle[i % 4] for i in range(n)])


@pytest.fixture(scope="module")
def recipes_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("recipes_suite")
    real = _real_set(root / "real", 120, seed=0)
    model = export_untrained_tiny(root / "model", size=SIZE, domains=("phantom_a",))
    overrides = [f"real_dir={real}", f"model={model}", f"out={root / 'report'}", "tracking=false", "dry_run=true"]
    cfg = load_config(SuiteConfig, "platform/busgen/configs/recipes_ci.yaml", overrides)
    return evaluate.run_suite(cfg), root / "report"


def test_every_recipe_arm_and_scaling_point_runs_and_is_reported(recipes_run):
    result, out = recipes_run
    util = result.utility
    assert not util.failed()
    expected = {
        "real", "real+syn x1", "syn only", "syn->real ft", "real+filtered syn x1 (tau=0.5)", "real+syn g1 x1",
        "real+syn g3 x1", "real+minority syn", "syn only N=8", "real+syn x1 N=8", "real 50%",
    }  # fmt: skip
    assert set(util.arm_order()) == expected and len(util.trials) == len(expected)  # dry run: one seed
    assert set(util.deltas["real_test"]) == expected - {"real"}
    sizes = {t.arm: t.n_syn_train for t in util.trials}
    assert sizes["syn only N=8"] == 8 and sizes["syn only"] == 16 and sizes["real"] == 0
    assert util.recipes.guidance_sizes == {"1": 8, "3": 8} and set(util.recipes.filter_kept) == {"benign", "malignant"}
    assert {r.series for r in util.scaling["real_test"]} == {"real", "syn only", "real+syn x1"}
    text = (out / "report.md").read_text()
    for needle in ("Recipes and yardstick", "Verdicts", "target Δ ≥ -0.02", "Confidence filter", "Guidance sweep"):
        assert needle in text, needle
    assert (out / "scaling.png").is_file() and (out / "recipe_deltas.png").is_file()
    assert len(pq.read_table(out / "scaling.parquet")) == len(util.scaling["real_test"])


def test_an_interrupted_grid_is_rebuilt_from_its_trial_artifacts(recipes_run):
    from busgen.eval.utility.grid import rebuild_utility

    result, out = recipes_run
    again = rebuild_utility(result.params, out / "work")
    assert sorted(again.arm_order()) == sorted(result.utility.arm_order())
    assert again.recipes == result.utility.recipes
    for arm, d in result.utility.deltas["real_test"].items():
        assert again.deltas["real_test"][arm].value == pytest.approx(d.value)
    assert {t.arm: t.n_syn_train for t in again.trials} == {t.arm: t.n_syn_train for t in result.utility.trials}


def test_a_suite_run_in_parts_is_reported_from_its_work_folders(recipes_run, tmp_path):
    result, out = recipes_run
    cfg = result.params.model_copy(update={"out": str(tmp_path)})  # a second out folder that ran nothing yet
    joined = evaluate.report_from_work(cfg, more_work=[str(out / "work")])
    assert sorted(joined.utility.arm_order()) == sorted(result.utility.arm_order())
    assert "Recipes and yardstick" in (tmp_path / "report.md").read_text() and (tmp_path / "results.csv").is_file()
