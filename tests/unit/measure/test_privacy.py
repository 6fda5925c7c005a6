"""Privacy audit: planted copies are flagged, clean sets are not; membership and detector AUCs behave."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers.data import shift_images

from busgen.data.dataset import DatasetError
from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from busgen.measure.privacy import audit as privacy
from busgen.measure.privacy import encoder as encoders

SIZE = 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def train_set():
    images, _, labels = make_phantom_arrays(150, SIZE, seed=0)
    return images, labels


@pytest.fixture(scope="module")
def encoder():
    """Trained on phantoms disjoint from the training set it audits (one trained on that set is refused)."""
    disjoint, _, _ = make_phantom_arrays(150, SIZE, seed=1)
    return encoders.train_copy_encoder(disjoint, epochs=40, seed=0, cfg=encoders.CopyEncoderConfig(image_size=SIZE))


def _planted_copies(train: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    src = train[:12]
    return {
        "exact": src.copy(),
        "shift": shift_images(src, 1, -2),
        "noise": np.clip(src + rng.normal(0, 6, src.shape), 0, 255).astype(np.uint8),
        "flip": src[:, :, ::-1].copy(),
    }


def test_planted_copies_are_all_flagged(train_set, encoder):
    train = train_set[0]
    for kind, syn in _planted_copies(train).items():
        audit = privacy.audit_memorization(syn, train, encoder)
        assert audit.flagged.all(), kind
        assert (audit.pixel_nn == np.arange(12)).all(), kind  # matched to the image it was copied from
    exact = privacy.audit_memorization(_planted_copies(train)["exact"], train, encoder)
    assert exact.is_copy.all() and exact.is_memorized.all()
    np.testing.assert_allclose(exact.pixel_sim, 1.0, atol=1e-5)
    twice = privacy.audit_memorization(np.concatenate([train[:3], train[:3], train[:2]]), train, encoder)
    summary = twice.summary()  # 8 synthetic copies of 3 distinct training images
    assert (summary["n_flagged"], summary["n_train_copied"], summary["memorization_rate"]) == (8, 3, 1.0)


def test_clean_set_is_not_flagged(train_set, encoder):
    clean, _, _ = make_phantom_arrays(60, SIZE, seed=7)
    audit = privacy.audit_memorization(clean, train_set[0], encoder)
    assert not audit.flagged.any()
    summary = audit.summary()
    assert (
        summary["n_copies"] == summary["n_mem"] == summary["n_train_copied"] == 0 and summary["memorization_rate"] == 0
    )
    assert 0 < summary["pixel"]["p95_top1_sim"] < 1 and summary["feature"]["median_ratio"] > 0.5


def test_encoder_embeddings_are_unit_norm_and_deterministic(train_set, encoder):
    feats = encoders.encode(encoder, train_set[0][:5])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoders.encode(encoder, train_set[0][:5]), feats, atol=1e-6)


def test_share_filter_drops_flagged_rows_and_writes_audit(tmp_path, train_set):
    train = train_set[0]
    clean, _, labels = make_phantom_arrays(10, SIZE, seed=9)
    syn = np.concatenate([clean, train[:3]])  # rows 10..12 are copies
    ids = np.arange(100, 113)
    syn_dir = tmp_path / "syn"
    syn_dir.mkdir()
    table = pa.table(
        {"image": [encode_png(i) for i in syn], "label": labels + ["benign"] * 3, "index": ids, "split": ["train"] * 13}
    )
    pq.write_table(table, syn_dir / "part-0.parquet")
    (syn_dir / "manifest.json").write_text("{}")
    audit = privacy.audit_memorization(syn, train, None, syn_ids=ids)
    report = privacy.share_filter(syn_dir, tmp_path / "shared", audit)
    kept = pq.read_table(tmp_path / "shared" / "part-00000.parquet")
    assert sorted(report["removed_ids"]) == [110, 111, 112]
    assert kept.num_rows == 10 and set(kept["index"].to_pylist()) == set(range(100, 110))
    assert json.loads((tmp_path / "shared" / "audit.json").read_text())["n_flagged"] == 3
    assert (tmp_path / "shared" / "manifest.json").is_file()
    png = privacy.save_closest_pairs_png(tmp_path / "pairs.png", syn, train, audit.closest_pairs(4), k=4)
    assert png.stat().st_size > 0


class _ToyMemorizingDenoiser:
    """Denoising error = distance to the nearest memorised image + noise: members are denoised better."""

    def __init__(self, members: np.ndarray):
        self.members = torch.from_numpy(members).float().div(127.5).sub(1).flatten(1)

    def __call__(self, x0: torch.Tensor, t: int) -> torch.Tensor:
        d = torch.cdist(x0.flatten(1), self.members).min(1).values
        return d * (t / 100) + 0.05 * torch.rand(len(x0))


def test_membership_auc_high_for_memorising_model_and_chance_for_independent_scores(train_set):
    members, nonmembers = train_set[0][:60], make_phantom_arrays(60, SIZE, seed=3)[0]
    fn = _ToyMemorizingDenoiser(members)
    leak = privacy.membership_auc(
        privacy.denoising_error_scores(fn, members, (50, 100)),
        privacy.denoising_error_scores(fn, nonmembers, (50, 100)),
    )
    assert leak["auc"] > 0.95 and leak["tpr_at_1pct_fpr"] > 0.5

    def independent(x0, t):
        return torch.rand(len(x0))

    many_members, many_non = make_phantom_arrays(400, 16, seed=4)[0], make_phantom_arrays(400, 16, seed=5)[0]
    chance = privacy.membership_auc(
        privacy.denoising_error_scores(independent, many_members, seed=1),
        privacy.denoising_error_scores(independent, many_non, seed=2),
    )
    assert abs(chance["auc"] - 0.5) < 0.07


def test_denoising_scores_are_reproducible_and_batch_independent(train_set):
    def noisy(x0, t):
        return x0.flatten(1).pow(2).mean(1) + torch.randn(len(x0))

    x = train_set[0][:10]
    np.testing.assert_array_equal(
        privacy.denoising_error_scores(noisy, x, seed=0), privacy.denoising_error_scores(noisy, x, seed=0)
    )


def test_share_filter_refuses_a_set_whose_rows_are_not_the_audited_rows(tmp_path, train_set):
    """A shard the audit did not read (a nested folder, a late file) must not ship unaudited."""
    train = train_set[0]
    clean, _, labels = make_phantom_arrays(4, SIZE, seed=5)
    syn_dir = tmp_path / "syn"
    (syn_dir / "late").mkdir(parents=True)

    def write(fp, images, ids):
        table = pa.table({"image": [encode_png(i) for i in images], "label": labels[: len(ids)], "index": ids})
        pq.write_table(table, fp)

    write(syn_dir / "part-0.parquet", clean[:2], [0, 1])
    write(syn_dir / "late" / "part-1.parquet", np.stack([train[0], clean[2]]), [2, 3])  # row 2 copies train[0]
    audit = privacy.audit_memorization(clean[:2], train, None, syn_ids=np.array([0, 1]))  # saw rows 0, 1 only
    with pytest.raises(DatasetError, match="holds 4 rows but the audit saw 2"):
        privacy.share_filter(syn_dir, tmp_path / "shared", audit)
    assert not (tmp_path / "shared").exists()  # refused: nothing written, nothing dropped silently
    other = privacy.audit_memorization(clean[:4], train, None, syn_ids=np.array([0, 1, 2, 9]))  # same count, other ids
    with pytest.raises(DatasetError, match="not the 4 audited ids"):
        privacy.share_filter(syn_dir, tmp_path / "shared", other)


def test_detector_auc_chance_for_same_distribution_and_high_for_shifted():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 8))
    same = privacy.detector_auc(real, rng.standard_normal((200, 8)))
    shifted = privacy.detector_auc(real, rng.standard_normal((200, 8)) + 1.0)
    assert abs(same["auc"] - 0.5) < 0.1 and shifted["auc"] > 0.9


def test_share_filter_dir_trains_its_encoder_on_held_out_images_only(tmp_path):
    from helpers.data import write_parquet_dataset

    from busgen.eval.share import share_filter_dir

    images, masks, labels = make_phantom_arrays(40, SIZE, seed=11)
    real = write_parquet_dataset(
        tmp_path / "real", images, masks, labels, "phantom", ["train"] * 24 + ["val"] * 8 + ["test"] * 8
    )
    clean, _, clean_labels = make_phantom_arrays(6, SIZE, seed=12)
    syn_dir = tmp_path / "syn"
    syn_dir.mkdir()
    syn = np.concatenate([images[:3], clean])  # rows 0-2 copy training images
    table = pa.table({"image": [encode_png(i) for i in syn], "label": labels[:3] + clean_labels, "index": np.arange(9)})
    pq.write_table(table, syn_dir / "part-0.parquet")
    record = share_filter_dir(syn_dir, real, tmp_path / "shared", encoder_epochs=1, check_real=False)
    assert set(record["removed_ids"]) >= {0, 1, 2} and record["knn_k"] == 3
    assert record["copy_encoder"] == record["encoder_data"] and record["encoder_data"].startswith(
        "half of splits val+test"
    )
    dcr = record["dcr_membership"]  # members = train (24); the other half of val+test (8) are the non-members
    assert dcr["pixel"]["n_members"] == 24 and dcr["feature"]["n_non_members"] == 8
    whole = share_filter_dir(syn_dir, real, tmp_path / "whole", split=None, encoder_epochs=1, check_real=False)
    assert (
        whole["encoder_data"] is None and whole["copy_encoder"].startswith("none") and whole["dcr_membership"] is None
    )
