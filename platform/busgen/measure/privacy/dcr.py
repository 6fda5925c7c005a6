"""Distance-to-closest-record (DCR) membership inference: the sample-level attack on a shared synthetic set.

Someone holding only the shared synthetic images and a candidate patient image asks:
was this image in the training set? If the generator copies or nearly copies its
training images, a member sits closer to its nearest synthetic image than a non-member
(a held-out real image of the same distribution) does. Score = minus the distance to the
closest synthetic image, in two spaces: blurred pixels (the audit's descriptors, shifts
and flips included) and the copy encoder (augmentation-invariant). AUC 0.5 = no leakage.

The copy encoder must be trained on neither the members nor the non-members it scores:
trained on either group, its space treats that group differently from the other, and the
attack would "find" membership in the encoder rather than in the synthetic set.
`split_non_members` gives a disjoint half of the held-out images to train it on.

This measures what CPSample protects (the samples). The denoising-error attack in
``membership.py`` measures the model weights, which CPSample does not change.
"""

from __future__ import annotations

import numpy as np

from busgen.measure.privacy.audit import AuditConfig, _distance, knn_similarities, membership_auc, pixel_descriptors


def closest_record_distance(queries: np.ndarray, synthetic: np.ndarray, encoder=None, cfg=None) -> np.ndarray:
    """Distance of each query image (uint8 (N, H, W)) to its closest synthetic image (pixel, or encoder space)."""
    cfg = cfg or AuditConfig()
    if encoder is None:
        centre = pixel_descriptors(synthetic, cfg)[0]
        entries = [centre] + ([pixel_descriptors(synthetic, cfg, flip=True)[0]] if cfg.match_flips else [])
        sim, _ = knn_similarities(pixel_descriptors(queries, cfg), entries, 1)
    else:
        from busgen.measure.privacy.encoder import encode

        entries = [encode(encoder, synthetic)]
        if cfg.match_flips:
            entries.append(encode(encoder, synthetic[:, :, ::-1].copy()))
        sim, _ = knn_similarities([encode(encoder, queries)], entries, 1)
    return _distance(sim[:, 0])


def split_non_members(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Held-out images split in two random halves: (copy-encoder training images, attack non-members)."""
    order = np.random.default_rng(seed).permutation(len(images))
    half = len(images) // 2
    return images[np.sort(order[:half])], images[np.sort(order[half:])]


def dcr_membership(
    members: np.ndarray, non_members: np.ndarray, synthetic: np.ndarray, encoder=None, cfg=None
) -> dict[str, dict[str, float]]:
    """AUC and TPR at 1% FPR of "closer to a synthetic image => member", per space (``pixel``, ``feature``).

    The ``feature`` entry also names the encoder's training data (``encoder_data``).

    Raises:
        ValueError: the encoder was trained on some of the members or non-members.
    """
    out = {}
    for space, enc in (("pixel", None), ("feature", encoder)):
        if space == "feature" and encoder is None:
            continue
        extra = {}
        if enc is not None:
            from busgen.measure.privacy.encoder import require_disjoint

            require_disjoint(enc, members, "DCR members")
            extra["encoder_data"] = require_disjoint(enc, non_members, "DCR non-members")
        d_m = closest_record_distance(members, synthetic, enc, cfg)
        d_n = closest_record_distance(non_members, synthetic, enc, cfg)
        out[space] = {**membership_auc(d_m, d_n), "n_members": len(d_m), "n_non_members": len(d_n), **extra}
    return out
