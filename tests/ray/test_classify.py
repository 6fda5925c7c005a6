"""The classifier's batch predictor runs as a Ray Data actor pool (plumbing: a random-weight classifier)."""

from __future__ import annotations

from helpers.models import save_random_classifier

from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.model import classifier

SIZE = 32


def test_predictor_in_ray_data_map_batches(ray_local, tmp_path):
    model_dir = save_random_classifier(tmp_path / "clf", size=SIZE)
    xt, _, yt = make_phantom_arrays(24, SIZE, seed=2)
    ds = ray_local.data.from_items([{"image": img, "label": lab} for img, lab in zip(xt, yt)])
    out = ds.map_batches(
        classifier.Predictor,
        fn_constructor_args=(str(model_dir),),
        batch_size=8,
        num_cpus=0.5,
        compute=ray_local.data.ActorPoolStrategy(size=1),
    ).take_all()
    assert len(out) == 24 and all(len(r["probs"]) == 3 for r in out)
    assert {r["pred_label"] for r in out} <= set(CLASSES)
