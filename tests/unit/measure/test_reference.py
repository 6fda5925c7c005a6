"""The frozen reference encoder: shipped, pinned by hash, deterministic to rebuild, and right on planted answers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import SHARED
from PIL import Image

from busgen.measure import fidelity
from busgen.measure.privacy.audit import detector_auc
from busgen.measure.reference import REFERENCE_VERSION, card_path, file_sha256, load_reference, weights_path

BUSI = SHARED / "data" / "busi128"


def _busi_split(split: str) -> np.ndarray:
    """BUSI images of one split, read straight from the shared folder (grayscale uint8, 128 px)."""
    if not (BUSI / "labels.csv").is_file():
        pytest.skip("../shared/data/busi128 is not available")
    with open(BUSI / "labels.csv") as f:
        paths = [r["path"] for r in csv.DictReader(f) if r["split"] == split]
    return np.stack([np.asarray(Image.open(BUSI / p).convert("L").resize((64, 64))) for p in paths])


def test_the_shipped_encoder_loads_and_names_itself_by_version_and_hash():
    enc = load_reference()
    assert enc.version == REFERENCE_VERSION
    assert enc.sha256 == file_sha256(weights_path()) and len(enc.sha256) == 64
    assert enc.label == f"{REFERENCE_VERSION} (sha256 {enc.sha256[:12]})"
    assert weights_path().stat().st_size < 2 * 2**20  # float16 on disk: small enough to ship inside the package
    card = enc.card
    assert set(card["trained_on"]) == {"busi", "busuclm"}
    assert all(v["split"] == "train" for v in card["trained_on"].values())


def test_features_are_one_space_for_every_image_size():
    enc = load_reference()
    rng = np.random.default_rng(0)
    for size in (32, 64, 128):
        feats = enc.features(rng.integers(0, 255, (3, size, size), dtype=np.uint8))
        assert feats.shape == (3, enc.model.feature_dim) and np.isfinite(feats).all()
    assert enc.features(np.zeros((0, 64, 64), np.uint8)).shape == (0, enc.model.feature_dim)


def test_a_changed_weights_file_is_refused(tmp_path: Path):
    for src in (weights_path(), card_path()):
        shutil.copy(src, tmp_path / src.name)
    blob = bytearray((tmp_path / weights_path().name).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / weights_path().name).write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256"):
        load_reference(folder=str(tmp_path))


def test_kid_planted_two_disjoint_real_halves_read_zero_within_the_interval():
    test = _busi_split("test")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(test))
    a, b = test[idx[: len(idx) // 2]], test[idx[len(idx) // 2 :]]
    enc = load_reference()
    kid = fidelity.kid_interval(enc.features(a), enc.features(b))
    assert kid["kid_ci_low"] <= 0 <= kid["kid_ci_high"], kid


def test_fid_kid_detector_planted_noise_is_far_above_the_real_floor():
    val, test = _busi_split("val"), _busi_split("test")
    noise = np.random.default_rng(1).integers(0, 255, test.shape, dtype=np.uint8)
    out = fidelity.reference_fidelity(val, noise, floor_images=test)
    syn, floor = out["synthetic"], out["floor"]
    assert out["encoder"]["name"] == REFERENCE_VERSION
    assert syn["kid_ci_low"] > floor["kid_ci_high"] and syn["kid"] > 10 * max(floor["kid"], 1e-3)
    assert syn["fid"] > 5 * floor["fid"] and syn["fid_n"] == floor["fid_n"] == min(len(val), len(test))
    assert out["detector_auc"] > 0.95
    enc = load_reference()
    assert detector_auc(enc.features(val), enc.features(test))["auc"] < 0.75  # real vs real: no signature


def test_fid_is_taken_at_equal_n_and_says_which_n():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(50, 8))
    fid, n = fidelity.fid_equal_n(a, b)
    assert n == 50 and fid == pytest.approx(fidelity.fid_equal_n(a, b)[0])  # seeded subsample


def _tiny_site(out: Path, seed: int) -> str:
    from helpers.data import write_parquet_dataset

    from busgen.data.phantom import make_phantom_arrays

    images, masks, labels = make_phantom_arrays(24, 32, seed)[:3]
    splits = ["train"] * 16 + ["val"] * 8
    return str(write_parquet_dataset(out, images, masks, labels, f"site{seed}", splits))


def test_the_fit_command_is_deterministic_byte_for_byte(tmp_path: Path):
    from busgen.measure.reference_fit import ReferenceFitConfig, fit_reference

    sites = {"a": _tiny_site(tmp_path / "a", 0), "b": _tiny_site(tmp_path / "b", 1)}
    hashes = []
    for run in ("one", "two"):
        cfg = ReferenceFitConfig(
            datasets=sites, version="tiny", out=str(tmp_path / run), epochs=2, width=8, image_size=32
        )
        hashes.append(file_sha256(fit_reference(cfg)))
        assert load_reference("tiny", str(tmp_path / run)).card["n_train"] == 32
    assert hashes[0] == hashes[1]
