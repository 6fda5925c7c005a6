"""Planted answers for the memorisation audit and the DCR attack (issue 26, item 4).

Members are phantoms of which 40% have a near-duplicate in the member set (BUSI: 42% of
train images do). Copies of them -- exact, or mildly shifted and re-noised -- must be
flagged (the old ratio divided by the nearest member's distance to its own duplicate and
never passed them); fresh images of the same distribution must not be. The copy encoder
trains on a third, disjoint set: trained on the members it audits, it is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import shift_images

from busgen.data.phantom import make_phantom_arrays
from busgen.measure.privacy import audit as privacy
from busgen.measure.privacy import encoder as encoders
from busgen.measure.privacy.dcr import dcr_membership, split_non_members

SIZE = 32

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _noisy(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(images + rng.normal(0, std, images.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    base = make_phantom_arrays(100, SIZE, seed=20)[0]
    dup_of = np.sort(rng.choice(len(base), 40, replace=False))
    members = np.concatenate([base, _noisy(base[dup_of], 3, rng)])  # 140 members, 80 in near-duplicate pairs
    reference = make_phantom_arrays(150, SIZE, seed=22)[0]  # neither members nor non-members: trains the encoder
    enc = encoders.train_copy_encoder(
        reference, epochs=30, seed=0, cfg=encoders.CopyEncoderConfig(image_size=SIZE), data="phantoms seed 22"
    )
    return {
        "members": members,
        "duplicated": np.r_[dup_of, np.arange(len(base), len(members))],  # member rows that have a near-duplicate
        "non_members": make_phantom_arrays(140, SIZE, seed=21)[0],
        "fresh": make_phantom_arrays(140, SIZE, seed=23)[0],
        "mild": _noisy(shift_images(members, 1, -1), 4, rng),  # mildly augmented copies of every member
        "encoder": enc,
    }


def test_planted_copies_of_members_with_duplicates_are_flagged(planted):
    members, dup = planted["members"], planted["duplicated"]
    for kind in ("exact", "mild"):
        syn = members.copy() if kind == "exact" else planted["mild"]
        audit = privacy.audit_memorization(syn, members, planted["encoder"])
        assert audit.k == 7 and audit.summary()["encoder_data"] == "phantoms seed 22 (150 images)"
        assert audit.summary()["memorization_rate"] >= 0.95, kind
        assert audit.flagged[dup].all(), kind
        # the k-NN ratio itself (not only the absolute floor) passes copies of duplicated members
        assert (audit.pixel_ratio[dup] <= audit.config.copy_ratio).all(), kind


def test_planted_fresh_images_are_not_flagged(planted):
    audit = privacy.audit_memorization(planted["fresh"], planted["members"], planted["encoder"])
    assert audit.summary()["memorization_rate"] <= 0.05
    assert np.median(audit.pixel_ratio) > 0.8 and audit.pixel_sim.max() < audit.config.copy_pixel_sim


def test_planted_dcr_attack_finds_copied_members_and_gives_chance_on_disjoint_images(planted):
    members, non_members, enc = planted["members"], planted["non_members"], planted["encoder"]
    leaky = dcr_membership(members, non_members, members, enc)  # the shared set is the members themselves
    safe = dcr_membership(members, non_members, planted["fresh"], enc)
    for space in ("pixel", "feature"):
        assert leaky[space]["auc"] >= 0.95, space
        assert abs(safe[space]["auc"] - 0.5) <= 0.1, space
    assert safe["feature"]["encoder_data"] == "phantoms seed 22 (150 images)"


def test_an_encoder_trained_on_the_members_is_refused(planted):
    members, non_members = planted["members"], planted["non_members"]
    on_members = encoders.train_copy_encoder(members[:40], epochs=1, cfg=encoders.CopyEncoderConfig(image_size=SIZE))
    with pytest.raises(ValueError, match="trained on 40 of the 140 audited training images"):
        privacy.audit_memorization(planted["fresh"][:4], members, on_members)
    with pytest.raises(ValueError, match="DCR members"):
        dcr_membership(members, non_members, planted["fresh"], on_members)
    enc_half, attack_half = split_non_members(non_members)
    assert len(enc_half) + len(attack_half) == len(non_members)
    assert not encoders.image_hashes(enc_half) & encoders.image_hashes(attack_half)
    assert len(encoders.disjoint_images(np.concatenate([members[:5], non_members]), members)) == len(non_members)


def test_knn_k_scales_with_the_training_set():
    cfg = privacy.AuditConfig()
    assert [privacy.knn_k(n, cfg) for n in (2, 30, 140, 545, 1000, 50_000)] == [2, 3, 7, 27, 50, 50]
