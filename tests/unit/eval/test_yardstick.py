"""The stable yardstick: EMA weights, flip averaging, seed-and-case bootstrap, noise floor; recipes end to end.

The end-to-end suite (platform/busgen/configs/recipes_ci.yaml) runs every recipe arm and scaling
point as Ray Tune trials on 32 px phantoms with an untrained generator: it checks the
plumbing, not what synthetic data is worth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busgen.data.phantom import make_phantom_arrays
from busgen.eval.utility.grid import scaling_rows, yardstick_noise
from busgen.eval.utility.results import ClassifierMetrics, PairedDelta, UtilityResult, UtilityTrial
from busgen.measure import classify, metrics
from busgen.model import classifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_weight_ema_warms_up_then_follows_slowly():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = classify.WeightEma(net, decay=0.9)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].num_batches_tracked.fill_(7)
    start = ema.model[0].weight.clone()
    ema.update(net)  # first step: decay min(0.9, 1/10) = 0.1, so the EMA jumps most of the way
    expected = 0.1 * start + 0.9
    assert torch.allclose(ema.model[0].weight, expected)
    for _ in range(200):
        ema.update(net)
    assert torch.allclose(ema.model[0].weight, torch.ones(2, 2), atol=1e-4)
    assert int(ema.model[1].num_batches_tracked) == 7  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_fit_with_ema_keeps_the_averaged_weights():
    x, _, y = make_phantom_arrays(60, 16, seed=0)
    xv, _, yv = make_phantom_arrays(30, 16, seed=1)
    names = sorted(set(y) | set(yv))
    cfg = classifier.ClassifierConfig(width=4, blocks=(1, 1, 1, 1), image_size=16, epochs=2, patience=5, ema_decay=0.5)
    model, hist = classify.train_classifier(x, y, xv, yv, cfg, names)
    raw, _ = classify.train_classifier(x, y, xv, yv, cfg.model_copy(update={"ema_decay": 0.0}), names)
    # same seed and data: the live weights match, so a difference can only be the EMA kept in the model
    first = next(iter(model.state_dict()))
    assert not torch.equal(model.state_dict()[first], raw.state_dict()[first]) and len(hist) == 2


def test_flip_tta_averages_the_image_and_its_mirror():
    cfg = classifier.ClassifierConfig(width=4, blocks=(1, 1, 1, 1), image_size=16)
    plain = classifier.build_model(cfg, 2).eval()
    tta = classifier.build_model(cfg.model_copy(update={"tta_flip": True}), 2).eval()
    tta.load_state_dict(plain.state_dict())
    images = make_phantom_arrays(6, 16, seed=3)[0]
    expected = (classifier.predict_proba(plain, images) + classifier.predict_proba(plain, images[:, :, ::-1])) / 2
    np.testing.assert_allclose(classifier.predict_proba(tta, images), expected, atol=1e-6)
    assert classifier.ClassifierConfig.yardstick().tta_flip and classifier.ClassifierConfig.yardstick().ema_decay > 0


def test_seed_resampling_widens_the_delta_ci_when_seeds_disagree():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 50)
    base = [y + rng.normal(0, 1.0, 100) for _ in range(4)]
    noisy = [y * s + rng.normal(0, 1.0, 100) for s in (0.2, 2.0, 0.3, 2.5)]  # seeds far apart
    cases = metrics.paired_auc_delta(y, base, noisy, n_boot=100)
    both = metrics.paired_auc_delta(y, base, noisy, n_boot=100, resample_runs=True)
    assert both["value"] == pytest.approx(cases["value"])
    assert both["ci_high"] - both["ci_low"] > cases["ci_high"] - cases["ci_low"]
    same = metrics.paired_auc_delta(y, base, base, n_boot=100, resample_runs=True)
    assert same["value"] == same["ci_low"] == same["ci_high"] == 0
    np.testing.assert_allclose(metrics.rank_auc(y, np.stack(base, 1)), [metrics.roc_auc(y, b) for b in base])


def _trial(seed, auc, **kw) -> UtilityTrial:
    m = ClassifierMetrics(
        auc=auc, auc_ci_low=auc - 0.05, auc_ci_high=auc + 0.05, sensitivity=0.8, sensitivity_ci_low=0.7,
        sensitivity_ci_high=0.9, specificity=0.8, specificity_ci_low=0.7, specificity_ci_high=0.9,
        accuracy=0.8, balanced_accuracy=0.8, ece=0.05, threshold=0.5, n=99,
    )  # fmt: skip
    return UtilityTrial(
        seed=seed, status="ok", test_sets={"real_test": m}, **{"ratio": 0.0, "synthetic_only": False, **kw}
    )


def test_noise_floor_and_scaling_rows_from_trials():
    real = [_trial(s, a, series="real", n_real_train=400) for s, a in enumerate([0.80, 0.84, 0.82])]
    quarter = [
        _trial(s, a, series="real", real_fraction=0.25, label="real 25%", n_real_train=100)
        for s, a in enumerate([0.70, 0.74, 0.72])
    ]
    syn = [
        _trial(
            s, 0.75, synthetic_only=True, series="syn only", n_synthetic=1000, label="syn only N=1000", n_syn_train=1000
        )
        for s in range(3)
    ]
    util = UtilityResult(
        trials=real + quarter + syn,
        deltas={"real_test": {"real 25%": PairedDelta(value=-0.1, ci_low=-0.14, ci_high=-0.06, n_runs=3)}},
    )
    noise = yardstick_noise(util, "real_test")
    assert noise["real_auc_sd"] == pytest.approx(0.02) and noise["n_seeds"] == 3
    assert noise["resolvable_delta"] == pytest.approx(1.96 * 0.02 * np.sqrt(2 / 3))
    assert noise["median_paired_half_width"] == pytest.approx(0.04)
    rows = {(r.series, r.n): r for r in scaling_rows(util, "real_test")}
    assert set(rows) == {("real", 400), ("real", 100), ("syn only", 1000)}
    r = rows[("real", 100)]
    assert r.auc_mean == pytest.approx(0.72) and r.ci_low < 0.72 < r.ci_high and r.delta.value == -0.1
    assert rows[("syn only", 1000)].auc_std == 0 and rows[("syn only", 1000)].kind == "synthetic"
    assert util.recipe_arms() == [] and util.best_mix() is None  # subsets and syn only are no "recipe"
