"""The phantom simulator: deterministic, class morphology as specified, learnable."""

import numpy as np
import pytest

from busgen.data.imageio import mask_to_box
from busgen.data.phantom import STYLES, make_phantom_arrays, write_phantom


def test_same_seed_gives_identical_bytes(tmp_path):
    a = write_phantom(tmp_path / "a", 12, 48, seed=7)
    b = write_phantom(tmp_path / "b", 12, 48, seed=7)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def test_different_seeds_differ_and_chunks_match_the_whole():
    whole, _, _ = make_phantom_arrays(6, 48, seed=1)
    other, _, _ = make_phantom_arrays(6, 48, seed=2)
    tail, _, _ = make_phantom_arrays(3, 48, seed=1, start=3)
    assert not np.array_equal(whole, other)
    assert np.array_equal(whole[3:], tail)


def test_classes_are_balanced_and_normal_has_no_lesion():
    _, masks, labels = make_phantom_arrays(30, 48, seed=0)
    assert {c: labels.count(c) for c in set(labels)} == {"benign": 10, "malignant": 10, "normal": 10}
    for m, lbl in zip(masks, labels):
        assert (m.max() == 0) == (lbl == "normal")


def test_lesion_morphology_benign_parallel_malignant_taller_than_wide():
    _, masks, labels = make_phantom_arrays(60, 64, seed=3)
    aspect = {"benign": [], "malignant": []}
    for m, lbl in zip(masks, labels):
        if lbl != "normal":
            x0, y0, x1, y1 = mask_to_box(m)
            aspect[lbl].append((y1 - y0) / (x1 - x0))  # height / width
    assert np.mean(np.array(aspect["benign"]) < 1.0) == 1.0  # parallel: wider than tall
    assert np.mean(np.array(aspect["malignant"]) > 1.0) >= 0.9  # not parallel: taller than wide


def test_lesions_are_hypoechoic_and_malignant_shadows():
    images, masks, labels = make_phantom_arrays(30, 64, seed=4)
    for img, m, lbl in zip(images, masks, labels):
        if lbl == "normal":
            continue
        inside = img[m > 0].mean()
        ring = img[(np.roll(m, 6, 1) > 0) & (m == 0)].mean()
        assert inside < ring, "lesions must be darker than the tissue beside them"


def test_device_styles_differ_visibly():
    a, _, _ = make_phantom_arrays(12, 64, seed=0, style="a")
    b, _, _ = make_phantom_arrays(12, 64, seed=0, style="b")
    assert abs(float(a.mean()) - float(b.mean())) > 5 or abs(float(a.std()) - float(b.std())) > 5
    assert set(STYLES) >= {"a", "b"}


def test_classes_are_learnable_by_a_simple_classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    images, _, labels = make_phantom_arrays(240, 64, seed=5)
    thumbs = images.reshape(240, 16, 4, 16, 4).mean((2, 4)).reshape(240, -1) / 255.0
    acc = cross_val_score(LogisticRegression(max_iter=2000), thumbs, labels, cv=3).mean()
    assert acc > 0.7, f"3-class accuracy {acc:.2f} should be far above chance (0.33)"


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="style"):
        make_phantom_arrays(2, 32, style="zzz")
    with pytest.raises(ValueError, match="classes"):
        make_phantom_arrays(2, 32, classes=("cyst",))
