"""The /ui playground's data side, in-process: galleries, the nearest training image and its yardstick, the reader
study (plan, token-bound readers, confidence scale), the model card's defaults, examples and lesion boxes."""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.serve import write_gallery

from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from busgen.serve import study
from busgen.serve.gallery import ImageSet
from busgen.serve.nearest import COPY_THRESHOLD, NearestIndex

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


def test_readers_are_token_bound_ids_with_only_the_tokens_hash_stored(tmp_path):
    first = study.add_readers(tmp_path, 2)
    assert [r["reader"] for r in first] == ["reader-01", "reader-02"]
    assert len({r["token"] for r in first}) == 2 and all(len(r["token"]) >= 32 for r in first)
    stored = (tmp_path / "readers" / "reader-01.json").read_text()
    assert first[0]["token"] not in stored and study.token_sha256(first[0]["token"]) in stored
    assert study.load_readers(tmp_path) == {study.token_sha256(r["token"]): r["reader"] for r in first}
    assert [r["reader"] for r in study.add_readers(tmp_path, 1)] == ["reader-03"], "ids number on, never reused"
    assert set(study.results(tmp_path)["readers"]) == {"reader-01", "reader-02", "reader-03"}, "invited readers show"


def test_the_confidence_scale_ranks_answers_and_old_answers_still_load(tmp_path):
    base = {"reader": "reader-01", "row": 0, "label": "benign", "says_label": None}
    # Every call is right, but the reader is sure only of the synthetic ones: a rating AUC of 1 either way;
    # one wrong call made while guessing costs less AUC than the same call made with certainty.
    answers = [("synthetic", True, 5), ("synthetic", True, 4), ("real", False, 2), ("real", True, 1)]
    for item, (kind, says, conf) in enumerate(answers):
        study.save_answer(tmp_path, {**base, "item": item, "kind": kind, "says_synthetic": says, "confidence": conf})
    out = study.results(tmp_path)["readers"]["reader-01"]
    assert out["accuracy"] == 0.75 and out["mean_confidence"] == 3.0
    assert out["auc"] == 1.0, "the guessed wrong call ranks below both confident synthetic calls"
    assert study.auc([True, True, False, False], [1, 1, -1, 1]) == 0.75, "the same answers without confidence"
    # An answer stored before the confidence column existed reads back with confidence null.
    legacy = pa.table({k: [v] for k, v in {**base, "item": 9, "kind": "real", "says_synthetic": False,
                                            "answered_at": 0.0}.items()})  # fmt: skip
    pq.write_table(legacy, tmp_path / "answers" / "reader-01" / "00009.parquet")
    rows = study.load_answers(tmp_path).to_pylist()
    assert len(rows) == 5 and rows[-1]["confidence"] is None and study.rating(rows[-1]) == -1


def test_nearest_says_what_the_number_is_and_flags_copies_against_a_threshold(tmp_path):
    images = make_phantom_arrays(8, SIZE, seed=1)[0]
    index = NearestIndex([encode_png(im) for im in images], [f"s{i}" for i in range(8)])
    copy, other = index.query(
        [encode_png(images[2]), encode_png(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8))]
    )
    assert copy["possible_copy"] and copy["percentile"] == 100.0, "closer than any two training images are"
    assert not other["possible_copy"] and other["similarity"] < COPY_THRESHOLD
    metric = index.describe()
    assert metric["threshold"] == COPY_THRESHOLD and "Pearson correlation" in metric["metric"]
    assert metric["reference_size"] == 8 and -1 <= metric["reference_median"] < 1


def test_the_playground_defaults_are_the_model_cards(tmp_path):
    from helpers.models import export_untrained_tiny

    from busgen.serve.registry import read_generator_info

    model = export_untrained_tiny(tmp_path / "g", size=SIZE)
    defaults = read_generator_info("g", str(model)).defaults
    assert defaults.model_dump() == {"sampler": "ddim", "steps": 25, "guidance": 1.8}
    card = (model / "README.md").read_text().replace("steps: 25", "steps: 40").replace("guidance: 1.8", "guidance: 2.5")
    (model / "README.md").write_text(card)
    defaults = read_generator_info("g", str(model)).defaults
    assert defaults.model_dump() == {"sampler": "ddim", "steps": 40, "guidance": 2.5}
    (model / "README.md").unlink()
    assert read_generator_info("g", str(model)).defaults.steps == 25, "no card: the library's defaults"


def test_examples_are_one_phantom_per_class():
    from busgen.data.imageio import decode_image
    from busgen.serve.examples import EXAMPLE_SIZE, phantom_examples

    examples = phantom_examples()
    assert [e["label"] for e in examples] == ["benign", "malignant", "normal"]
    image = decode_image(base64.b64decode(examples[0]["image"]))
    assert image.shape == (EXAMPLE_SIZE, EXAMPLE_SIZE) and image.std() > 0


def test_generate_results_carry_each_images_lesion_box(tmp_path):
    from helpers.models import export_untrained_tiny

    from busgen.model import generator
    from busgen.serve.batching import sample_jobs

    gen = generator.load(export_untrained_tiny(tmp_path / "g", size=SIZE), device="cpu")
    base = {"label": "malignant", "n": 2, "seed": 5, "steps": 1, "guidance": None, "sampler": "ddim", "domain": None}
    given, prior = sample_jobs(gen, [{**base, "box": [0.1, 0.2, 0.5, 0.6]}, {**base, "box": None}], 1.0, 8)
    assert given["boxes"] == [[0.1, 0.2, 0.5, 0.6]] * 2
    drawn = gen.resolve_boxes(["malignant"] * 2, None, [5, 6])
    assert prior["boxes"] == [[round(float(v), 4) for v in b] for b in drawn], "the prior's box, drawn per seed"
    np.testing.assert_array_equal(prior["images"], gen.sample(["malignant"] * 2, steps=1, guidance=1.0, seeds=[5, 6]))
