"""Distance-to-closest-record (DCR) membership inference: the sample-level attack on a shared synthetic set.

Someone holding only the shared synthetic images and a candidate patient image asks:
was this image in the training set? If the generator copies or nearly copies its
training images, a member sits closer to its nearest synthetic image than a non-member
(a held-out real image of the same distribution) does. Score = minus the distance to the
closest synthetic image, in two spaces: blurred pixels (the audit's descriptors, shifts
and flips included) and the copy encoder (augmentation-invariant). AUC 0.5 = no leakage.

This measures what CPSample protects (the samples). The denoising-error attack in
``membership.py`` measures the model weights, which CPSample does not change.
"""

from __future__ import annotations

import numpy as np

from busgen.measure.privacy.audit import (
    AuditConfig,
    _bank,
    _distance,
    membership_auc,
    nearest_neighbours,
    pixel_descriptors,
)


def closest_record_distance(queries: np.ndarray, synthetic: np.ndarray, encoder=None, cfg=None) -> np.ndarray:
    """Distance of each query image (uint8 (N, H, W)) to its closest synthetic image (pixel, or encoder space)."""
    cfg = cfg or AuditConfig()
    if encoder is None:
        centre = pixel_descriptors(synthetic, cfg)[0]
        entries = [centre] + ([pixel_descriptors(synthetic, cfg, flip=True)[0]] if cfg.match_flips else [])
        sim, _ = nearest_neighbours(pixel_descriptors(queries, cfg), *_bank(*entries))
    else:
        from busgen.measure.privacy.encoder import encode

        entries = [encode(encoder, synthetic)]
        if cfg.match_flips:
            entries.append(encode(encoder, synthetic[:, :, ::-1].copy()))
        sim, _ = nearest_neighbours([encode(encoder, queries)], *_bank(*entries))
    return _distance(sim)


def dcr_membership(
    members: np.ndarray, non_members: np.ndarray, synthetic: np.ndarray, encoder=None, cfg=None
) -> dict[str, dict[str, float]]:
    """AUC and TPR at 1% FPR of "closer to a synthetic image => member", per space (``pixel``, ``feature``)."""
    out = {}
    for space, enc in (("pixel", None), ("feature", encoder)):
        if space == "feature" and encoder is None:
            continue
        d_m = closest_record_distance(members, synthetic, enc, cfg)
        d_n = closest_record_distance(non_members, synthetic, enc, cfg)
        out[space] = {**membership_auc(d_m, d_n), "n_members": len(d_m), "n_non_members": len(d_n)}
    return out
