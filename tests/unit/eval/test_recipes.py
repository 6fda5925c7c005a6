"""Utility recipes train on what they claim: fine-tune, confidence filter, minority balance, scaling subsets.

Data plans are checked image by image (`busgen.eval.utility.recipes.plan_phases` returns the
arrays a trial trains on); the filter is checked against a stub classifier whose scores
are known, so "keeps only images above tau" is asserted exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.data import write_parquet_dataset
from torch import nn

from busgen.data.imageio import resize_batch
from busgen.data.phantom import make_phantom_arrays
from busgen.eval.data import SuiteData
from busgen.eval.suites import FilterRecipe, GuidanceRecipe, RecipeSettings, ScalingSettings, SuiteConfig
from busgen.eval.trials import UtilityTrialConfig
from busgen.eval.utility import prep as recipe_prep
from busgen.eval.utility import recipes
from busgen.measure.arrays import labelled

SIZE = 16
CLASSES = ["benign", "malignant"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _digest(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A real set (imbalanced: 3 benign per malignant) and a class-uniform synthetic set of other images."""
    root = tmp_path_factory.mktemp("recipes")
    images, masks, labels = make_phantom_arrays(160, SIZE, seed=0)
    keep = [i for i, lab in enumerate(labels) if lab in CLASSES]
    ben = [i for i in keep if labels[i] == "benign"][:45]
    mal = [i for i in keep if labels[i] == "malignant"][:15]
    idx = ben + mal
    splits = ["train"] * 30 + ["val"] * 8 + ["test"] * 7
    splits = splits + ["train"] * 10 + ["val"] * 3 + ["test"] * 2
    real = write_parquet_dataset(root / "real", images[idx], masks[idx], [labels[i] for i in idx], "a", splits)
    syn_images, syn_masks, _ = make_phantom_arrays(40, SIZE, seed=7)
    syn = write_parquet_dataset(root / "syn", syn_images, syn_masks, CLASSES * 20, "a", "train")
    return str(real), str(syn)


def _trial(real, syn, **kw) -> UtilityTrialConfig:
    kw.setdefault("classifier", {"image_size": SIZE})  # the data's size: no resizing, images compare exactly
    return UtilityTrialConfig(
        real_dir=real, synthetic_dir=syn, classes=CLASSES, positive="malignant", artifacts_dir="x", **kw
    )


def test_finetune_first_phase_sees_no_real_image_and_second_only_real(sets):
    real, syn = sets
    phases = recipes.plan_phases(_trial(real, syn, recipe="finetune", finetune_lr_factor=0.25))
    real_imgs = _digest(labelled(real, None, CLASSES)[0])
    assert len(phases) == 2
    pre, ft = phases
    assert not (_digest(pre.x) & real_imgs) and set(pre.sources) == {"synthetic"} and pre.n_real == 0
    assert _digest(ft.x) <= real_imgs and set(ft.sources) == {"real:train"} and ft.n_synthetic == 0
    assert pre.lr_factor == 1.0 and ft.lr_factor == 0.25


def test_finetune_trains_phase_two_from_phase_one_weights(sets, monkeypatch):
    from busgen.measure import classify

    real, syn = sets
    seen = []
    original = classify.train_classifier

    def spy(x, y, xv, yv, cfg, classes, sample_weights=None, init_model=None):
        seen.append((_digest(x), init_model, cfg.lr))
        model, hist = original(x, y, xv, yv, cfg, classes, sample_weights=sample_weights, init_model=init_model)
        seen[-1] += (model,)
        return model, hist

    monkeypatch.setattr(classify, "train_classifier", spy)
    cfg = _trial(
        real, syn, recipe="finetune", classifier={"width": 4, "blocks": (1, 1, 1, 1), "epochs": 1, "image_size": SIZE}
    )
    recipes.train_phases(cfg, recipes.plan_phases(cfg), *labelled(real, "val", CLASSES))
    (x1, init1, lr1, model1), (x2, init2, lr2, _) = seen
    assert init1 is None and init2 is model1  # phase 2 continues phase 1's network
    assert not (x1 & _digest(labelled(real, None, CLASSES)[0])) and lr2 == pytest.approx(0.3 * lr1)


def test_balance_adds_minority_synthetic_up_to_balance(sets):
    real, syn = sets
    (phase,) = recipes.plan_phases(_trial(real, syn, recipe="balance"))
    counts = np.bincount(phase.y, minlength=2)
    assert counts[0] == counts[1] == 30  # 30 benign real; 10 malignant real + 20 synthetic malignant
    syn_rows = np.array(phase.sources) == "synthetic"
    assert syn_rows.sum() == 20 and set(phase.y[syn_rows]) == {1}
    assert not (_digest(phase.x[syn_rows]) & _digest(labelled(real, None, CLASSES)[0]))


def test_scaling_subsets_are_exact_nested_and_seed_independent(sets):
    real, syn = sets
    small = recipes.plan_phases(_trial(real, syn, synthetic_only=True, n_synthetic=10, seed=0))[0]
    large = recipes.plan_phases(_trial(real, syn, synthetic_only=True, n_synthetic=30, seed=3))[0]
    assert len(small.x) == 10 and len(large.x) == 30 and _digest(small.x) <= _digest(large.x)
    half = recipes.plan_phases(_trial(real, None, real_fraction=0.5))[0]
    assert np.bincount(half.y).tolist() == [15, 5]  # stratified: the class mix is kept
    with pytest.raises(ValueError, match="lower n_synthetic"):
        recipes.subset_indices(np.zeros(5, int), n=6)


class _MeanBrightness(nn.Module):
    """Stub classifier: p(malignant) = sigmoid(8 * mean pixel), so every score is known in advance."""

    image_size = SIZE
    tta_flip = False

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        z = 8 * x.mean(dim=(1, 2, 3))
        return torch.stack([-z / 2, z / 2], 1)


def test_filter_keeps_exactly_the_images_at_or_above_tau(sets, tmp_path, monkeypatch):
    from busgen.measure import classify
    from busgen.model import classifier

    real, syn = sets
    monkeypatch.setattr(classify, "train_classifier", lambda *a, **k: (_MeanBrightness(), []))
    cfg = SuiteConfig(real_dir=real, synthetic_dir=syn, classes=CLASSES, positive="malignant")
    cfg.utility.recipes.filter = FilterRecipe(tau=0.6)
    out, info = recipe_prep.filter_synthetic(cfg, SuiteData(), real, syn, tmp_path / "filtered")
    xs, ys = labelled(syn, None, CLASSES)
    p = classifier.predict_proba(_MeanBrightness(), xs)[np.arange(len(ys)), ys]
    expect = p >= 0.6
    assert 0 < expect.sum() < len(expect)  # the stub splits the set, so the test can fail
    kept_x, kept_y = labelled(out, None, CLASSES)
    assert _digest(kept_x) == _digest(xs[expect]) and len(kept_x) == expect.sum()
    for i, c in enumerate(CLASSES):
        assert info.filter_counts[c] == [int(expect[ys == i].sum()), int((ys == i).sum())]
        assert info.filter_kept[c] == pytest.approx(expect[ys == i].mean())


def test_grid_has_one_point_per_recipe_arm_and_seed(sets):
    real, syn = sets
    cfg = SuiteConfig(real_dir=real, synthetic_dir=syn, classes=CLASSES, positive="malignant")
    cfg.utility.ratios, cfg.utility.seeds = [0, 1], [0, 1]
    cfg.utility.recipes = RecipeSettings(
        finetune=True,
        balance=True,
        filter=FilterRecipe(tau=0.8),
        guidance=GuidanceRecipe(guidances=[1.0, 3.0], synthetic_dirs={1.0: syn, 3.0: syn}),
    )
    cfg.utility.scaling = ScalingSettings(n_synthetic=[10, 40, 100], real_fractions=[0.5], seeds=[0])
    info = recipe_prep.RecipeInfo()
    points = recipe_prep.grid_points(cfg, syn, "filtered", {1.0: syn, 3.0: syn}, info)
    arms = list(dict.fromkeys(UtilityTrialConfig(**{**_base(real, syn), **p}).arm for p in points))
    assert arms == [
        "real",
        "real+syn x1",
        "syn only",
        "syn->real ft",
        "real+filtered syn x1 (tau=0.8)",
        "real+syn g1 x1",
        "real+syn g3 x1",
        "real+minority syn",
        "syn only N=10",
        "real+syn x1 N=10",  # N=40 is the whole set: the full arms are those points already
        "real 50%",
    ]
    assert len(points) == 2 * 8 + 3  # two seeds per full-data arm, scaling.seeds=[0] for the 3 scaling points
    assert info.notes == ["scaling N=100 skipped: the synthetic set holds 40 images"]


def _base(real, syn):
    return {"real_dir": real, "synthetic_dir": syn, "classes": CLASSES, "positive": "malignant", "artifacts_dir": "x"}


def test_sets_of_another_size_are_mixed_at_the_classifier_size(sets, tmp_path):
    real, _ = sets
    large, masks, _ = make_phantom_arrays(12, 2 * SIZE, seed=9)  # a generator trained at twice the size
    syn = write_parquet_dataset(tmp_path / "syn32", large, masks, CLASSES * 6, "a", "train")
    (phase,) = recipes.plan_phases(_trial(str(real), str(syn), ratio=1.0))
    assert phase.x.shape[1:] == (SIZE, SIZE) and phase.n_synthetic == 12 and phase.x.dtype == np.uint8
    assert resize_batch(large, 2 * SIZE) is large  # same size: untouched
