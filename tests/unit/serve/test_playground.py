"""The /ui playground's data side, in-process: galleries, the nearest training image, the reader study's plan."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.serve import write_gallery

from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from busgen.serve import study
from busgen.serve.gallery import ImageSet
from busgen.serve.nearest import NearestIndex

pytestmark = pytest.mark.timeout(240)


SIZE = 32


def test_gallery_filters_pages_and_shows_provenance(tmp_path):
    gallery = ImageSet(write_gallery(tmp_path / "gal"))
    assert len(gallery) == 14
    page = gallery.page("benign", None, 0, 4)
    assert page["total"] == 7 and page["pages"] == 2 and len(page["items"]) == 4
    assert page["labels"] == ["benign", "malignant"] and page["domains"] == ["phantom", "site-b"]
    item = page["items"][0]
    assert item["label"] == "benign" and {"model_id", "seed", "sampler", "image"} <= set(item)
    assert gallery.page("benign", "site-b", 0, 4)["total"] == len(gallery.rows("benign", "site-b"))
    with pytest.raises(Exception, match="past the last page"):
        gallery.page(None, None, 9, 4)


def test_nearest_finds_an_exact_copy_with_similarity_one(tmp_path):
    images = make_phantom_arrays(6, SIZE, seed=1)[0]
    index = NearestIndex([encode_png(im) for im in images], [f"s{i}" for i in range(6)])
    (hit,) = index.query([encode_png(images[4])])
    assert hit["source"] == "s4" and hit["similarity"] > 0.999
    (other,) = index.query([encode_png(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8))])
    assert other["similarity"] < 0.5


def test_study_plan_is_balanced_shuffled_and_repeatable_and_scores_readers(tmp_path):
    items = study.plan("alice", 10, n_real=12, n_synthetic=14)
    assert items == study.plan("alice", 10, 12, 14) != study.plan("bob", 10, 12, 14)
    assert sorted(k for k, _ in items) == ["real"] * 5 + ["synthetic"] * 5
    for item, (kind, row) in enumerate(items):
        says = kind == "synthetic" if item % 5 else kind != "synthetic"  # right 8 times out of 10
        study.save_answer(
            tmp_path, {"reader": "alice", "item": item, "kind": kind, "row": row, "label": "benign",
                       "says_synthetic": says, "says_label": "benign"}
        )  # fmt: skip
    with pytest.raises(Exception, match="first answer is final"):  # a reader cannot re-answer after seeing more
        study.save_answer(tmp_path, {"reader": "alice", "item": 0, "kind": items[0][0], "row": items[0][1],
                                     "label": "benign", "says_synthetic": items[0][0] == "synthetic",
                                     "says_label": "malignant"})  # fmt: skip
    out = study.results(tmp_path)["readers"]["alice"]
    assert out["answered"] == 10, "the first answer stands"
    assert out["accuracy"] == 0.8 and out["label_accuracy"] == 1.0 and 0.5 < out["auc"] <= 1.0
    assert study.auc([True, False], [1, 0]) == 1.0 and study.auc([True, True], [1, 0]) is None
    with pytest.raises(Exception, match="reader must be"):
        study.check_reader("../etc")
