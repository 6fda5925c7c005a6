"""The converging yardstick: arms train on their own data until validation says stop, and answer planted questions.

Planted answers: a synthetic set that *is* the real training set must score like real
only (Δ within noise of 0); a synthetic set with shuffled labels must teach nothing
(test AUC near 0.5). A yardstick that fails either is biased, whatever it says about
real synthetic data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.data import write_parquet_dataset

from busgen.data.phantom import make_phantom_arrays
from busgen.eval.trials import UtilityTrialConfig, train_arm
from busgen.eval.utility import recipes
from busgen.measure import metrics
from busgen.model import classifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CLASSES = ["benign", "malignant"]
SIZE = 32


def _real(tmp: Path) -> str:
    images, masks, labels = make_phantom_arrays(240, SIZE, seed=0, classes=tuple(CLASSES))
    splits = ["train"] * 120 + ["val"] * 40 + ["test"] * 80
    return str(write_parquet_dataset(tmp / "real", images, masks, labels, "phantom_a", splits))


def _copy_of_train(real_dir: str, out: Path, shuffle_labels: bool) -> str:
    """The real train split written as a 'synthetic' set, rows permuted (optionally labels too)."""
    from busgen.measure.arrays import read_splits

    x, y, _, _ = read_splits(real_dir, ["train"], CLASSES)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(x))
    labels = np.asarray(y)[order]
    if shuffle_labels:
        labels = labels[rng.permutation(len(labels))]
    return str(write_parquet_dataset(out, x[order], None, list(labels), "synthetic", "train"))


def _cfg(real_dir: str, syn_dir: str | None, seed: int, **kw) -> UtilityTrialConfig:
    clf = classifier.ClassifierConfig.yardstick(
        width=8, blocks=(1, 1, 1, 1), image_size=SIZE, epochs=25, patience=4, batch_size=32, ema_decay=0.9
    )
    return UtilityTrialConfig(
        real_dir=real_dir,
        synthetic_dir=syn_dir,
        classes=CLASSES,
        positive="malignant",
        classifier=clf,
        artifacts_dir="unused",
        seed=seed,
        **kw,
    )


def _test_auc(cfg: UtilityTrialConfig) -> tuple[float, list[dict]]:
    from busgen.measure.arrays import labelled

    model, _, history, _ = train_arm(cfg)
    x, y = labelled(cfg.real_dir, "test", CLASSES)
    return metrics.roc_auc(y == 1, classifier.predict_proba(model, x)[:, 1]), history


def test_utility_planted_synthetic_equal_to_real_train_scores_like_real_only(tmp_path: Path):
    real = _real(tmp_path)
    syn = _copy_of_train(real, tmp_path / "copy", shuffle_labels=False)
    deltas = []
    for seed in (0, 1, 2):
        real_auc, _ = _test_auc(_cfg(real, None, seed))
        syn_auc, hist = _test_auc(_cfg(real, syn, seed, synthetic_only=True))
        assert real_auc > 0.75  # the yardstick learns the task at all
        assert sum(h["real_draws"] for h in hist) == 0  # the synthetic-only arm saw no real image
        deltas.append(syn_auc - real_auc)
    assert abs(np.mean(deltas)) < 0.05, deltas


def test_utility_planted_shuffled_labels_teach_nothing(tmp_path: Path):
    real = _real(tmp_path)
    syn = _copy_of_train(real, tmp_path / "shuffled", shuffle_labels=True)
    aucs = [_test_auc(_cfg(real, syn, seed, synthetic_only=True))[0] for seed in (0, 1)]
    assert abs(np.mean(aucs) - 0.5) < 0.15, aucs


def test_converge_sizes_each_epoch_by_the_arms_own_data_and_records_real_exposure(tmp_path: Path):
    real = _real(tmp_path)
    syn = _copy_of_train(real, tmp_path / "copy", shuffle_labels=False)
    _, _, history, sizes = train_arm(_cfg(real, syn, 0, ratio=2))
    assert {h["draws"] for h in history} == {3 * 120 // 32 * 32}  # 120 real + 2 x 120 synthetic, whole batches
    assert history[0]["real_draws"] == pytest.approx(history[0]["draws"] / 3)
    assert history[-1]["stop"] in (1.0, 2.0) and all(h["stop"] == 0 for h in history[:-1])


def test_equal_draws_is_a_named_variant_that_needs_its_size():
    with pytest.raises(ValueError, match="samples_per_epoch"):
        classifier.ClassifierConfig(budget_rule="equal_draws")
    cfg = classifier.ClassifierConfig(budget_rule="equal_draws", samples_per_epoch=64)
    assert cfg.samples_per_epoch == 64


def test_a_capped_epoch_is_the_equal_draws_variant_and_never_converge():
    from busgen.eval.suites import UtilitySettings

    assert UtilitySettings(classifier={"samples_per_epoch": 512}).classifier.budget_rule == "equal_draws"
    assert UtilitySettings().classifier.budget_rule == "converge"
    with pytest.raises(ValueError, match="budget_rule=equal_draws"):
        UtilitySettings(classifier={"samples_per_epoch": 512, "budget_rule": "converge"})


def test_plateau_schedule_halves_the_lr_only_when_validation_stalls():
    import torch

    from busgen.measure.classify import lr_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    step = lr_schedule(opt, classifier.ClassifierConfig(schedule="plateau", plateau_patience=2, epochs=3))
    # validation scores: improved, stale, stale (halve), improved, stale, stale (halve)
    for score, lr in [(0.5, 1.0), (0.5, 1.0), (0.5, 0.5), (0.6, 0.5), (0.6, 0.5), (0.6, 0.25)]:
        step(score)
        assert opt.param_groups[0]["lr"] == lr


def test_a_two_phase_recipe_shares_one_wall_budget(tmp_path: Path, monkeypatch):
    real = _real(tmp_path)
    syn = _copy_of_train(real, tmp_path / "copy", shuffle_labels=False)
    cfg = _cfg(real, syn, 0, recipe="finetune")
    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"max_seconds": 100.0})})
    budgets = []
    real_train = recipes.classify.train_classifier

    def spy(*args, **kw):
        budgets.append(args[4].max_seconds)
        return real_train(*args, **kw)

    monkeypatch.setattr(recipes.classify, "train_classifier", spy)
    train_arm(cfg)
    # phase 1 gets half; phase 2 gets what is left of the same 100 s (not a fresh 100 s)
    assert budgets[0] == pytest.approx(50.0) and 50.0 < budgets[1] < 100.0


def test_exposure_sums_draws_and_names_the_stop_reason():
    history = [
        {"draws": 100.0, "real_draws": 50.0, "stop": 0.0},
        {"draws": 100.0, "real_draws": 50.0, "stop": 1.0},
    ]
    assert recipes.exposure(history) == {"draws": 200.0, "real_draws": 100.0, "stopped": "converged (early stopping)"}
    assert recipes.exposure([{"val_auc": 0.5}]) == {"draws": None, "real_draws": None, "stopped": None}  # old history


def test_a_small_arm_gets_at_least_min_epoch_draws_per_validation(tmp_path: Path):
    """113 images are one batch: patience 6 would stop it after 6 steps; the floor makes each epoch 256 draws."""
    real = _real(tmp_path)
    cfg = _cfg(real, None, 0)
    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"min_epoch_draws": 256, "epochs": 2})})
    _, _, history, _ = train_arm(cfg)
    assert {h["draws"] for h in history} == {256}
    big = _cfg(real, _copy_of_train(real, tmp_path / "copy", shuffle_labels=False), 0, ratio=2)
    big = big.model_copy(update={"classifier": big.classifier.model_copy(update={"min_epoch_draws": 256, "epochs": 1})})
    assert train_arm(big)[2][0]["draws"] == 3 * 120 // 32 * 32  # larger arms keep their own epoch
