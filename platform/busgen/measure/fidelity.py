"""Fidelity and diversity of synthetic images, measured in an in-domain feature space.

Inception features (ImageNet, RGB, 299 px) are neither available offline nor
meaningful for 64 px grayscale ultrasound, so every distribution metric here
takes *features* from an in-domain encoder. Reports use one: the frozen reference
encoder shipped with the package (`busgen.measure.reference`), through
`reference_fidelity`, which records the encoder's version and sha256 beside the
numbers. Numbers are comparable only within one encoder.

KID (unbiased) is the headline at small n, with an interval; FID is biased by n, so
`reference_fidelity` computes it on equal-sized sets (the larger subsampled) and states n.

* FID (Heusel et al. 2017) and KID (Binkowski et al. 2018, unbiased, fine for small sets),
  computed by torchmetrics (``FrechetInceptionDistance(feature=...)`` over precomputed
  features; its ``poly_mmd`` per KID subset, the subsets seeded here);
* precision / recall / density / coverage (Naeem et al. 2020, k = 5): fidelity and
  diversity separately, which one FID number conflates; kNN via faiss (torchmetrics has no
  PRDC; the ``prdc`` package's brute-force distance matrices are what faiss replaces).
  MONAI (which has FID and MMD metrics, and the transforms and ResNet that
  ``busgen.model.classifier`` writes by hand) is not a dependency of the platform;
* MS-SSIM among same-class samples (Odena et al. 2017): a mode-collapse check in
  pixel space -- synthetic pairs much more alike than real pairs means low diversity.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch

# Feature distributions


class _Precomputed(torch.nn.Module):
    """torchmetrics' ``feature=`` module for features computed beforehand (by the reference encoder)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # read by torchmetrics instead of probing with a 299 px RGB image

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), by torchmetrics.

    ``FrechetInceptionDistance(feature=...)`` over the precomputed features, in float64 (its
    sums and covariances are float64; the features are passed as float64 so the result is too).
    It takes Tr((S_a S_b)^1/2) as the sum of the square roots of the eigenvalues of S_a S_b,
    which needs no regularisation when there are fewer samples than dimensions; it equals the
    former scipy ``sqrtm`` version to 1e-14 relative, 1e-8 on singular covariances
    (tests/unit/measure/test_metric_libs.py).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = (torch.as_tensor(np.atleast_2d(np.asarray(f, np.float64))) for f in (feats_a, feats_b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets of different widths: {a.shape[1]} and {b.shape[1]}")
    metric = FrechetInceptionDistance(feature=_Precomputed(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def kernel_inception_distance(
    feats_a: np.ndarray, feats_b: np.ndarray, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged over random subsets.

    Each subset's MMD is torchmetrics' ``poly_mmd`` (the kernel and estimator of its
    ``KernelInceptionDistance``); the subsets stay ours: seeded with ``seed`` (torchmetrics draws
    them from the global torch RNG) and of any ``subset_size`` (``kid_interval`` uses half-size
    subsets for its interval). Equal to the former numpy version to 1e-12 relative.

    Returns:
        (mean, std) over subsets.
    """
    from torchmetrics.image.kid import poly_mmd

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        values.append(float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y))))  # degree 3, gamma 1/d, coef 1
    return float(np.mean(values)), float(np.std(values))


# Precision, recall, density, coverage (Naeem et al. 2020)


def _l2_index(x: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatL2(x.shape[1])  # exact; distances are squared L2
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    return index


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest *other* point of the same set."""
    d2, _ = _l2_index(x).search(np.ascontiguousarray(x, dtype=np.float32), k + 1)  # column 0 is the point itself
    return np.sqrt(np.maximum(d2[:, k], 0.0))


def count_in_balls(query: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For each query, the number of centres j with ||query - centre_j|| < radii_j (faiss range search)."""
    r_max2 = float(radii.max()) ** 2
    lims, d2, idx = _l2_index(centres).range_search(np.ascontiguousarray(query, dtype=np.float32), r_max2 + 1e-6)
    inside = d2 < radii[idx] ** 2
    row = np.repeat(np.arange(len(query)), np.diff(lims.astype(np.int64)))
    return np.bincount(row[inside], minlength=len(query))


def prdc(real_feats: np.ndarray, syn_feats: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of synthetic vs real features (the `prdc` algorithm on faiss).

    precision: share of synthetic samples inside some real k-NN ball (fidelity);
    recall: share of real samples inside some synthetic k-NN ball (diversity);
    density: mean number of real balls containing a synthetic sample / k (~1 when matched);
    coverage: share of real balls containing at least one synthetic sample.
    """
    real, syn = np.asarray(real_feats, np.float32), np.asarray(syn_feats, np.float32)
    real_r, syn_r = knn_radii(real, k), knn_radii(syn, k)
    syn_in_real = count_in_balls(syn, real, real_r)
    real_in_syn = count_in_balls(real, syn, syn_r)
    d2_nearest_syn, _ = _l2_index(syn).search(real, 1)
    return {
        "precision": float((syn_in_real > 0).mean()),
        "recall": float((real_in_syn > 0).mean()),
        "density": float(syn_in_real.mean() / k),
        "coverage": float((np.sqrt(np.maximum(d2_nearest_syn[:, 0], 0)) < real_r).mean()),
    }


# MS-SSIM

# Wang et al. 2003 scale weights (finest first); truncated and renormalised for fewer scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(
    a: np.ndarray, b: np.ndarray, scales: int = 3, data_range: float = 255.0, win_size: int = 7, sigma: float = 1.5
) -> np.ndarray:
    """Multi-scale SSIM of image pairs (a[i], b[i]), for small grayscale images (torchmetrics).

    3 scales at 32-64 px (the 5-scale original needs >= 161 px), scale weights
    renormalised. torchmetrics draws the Gaussian (sigma 1.5) over 11 taps with
    reflect padding whatever ``win_size`` says (that only sizes its input check), so the
    numbers differ from the former hand-written 7-tap version by up to 0.03 per pair (more for more different pairs)
    (tests/unit/measure/test_metric_libs.py). Negative SSIM/CS values are clipped to 0
    (``normalize="relu"``) so the weighted product stays real. Computed in float64.

    Args:
        a, b: (N, H, W) images in [0, data_range] (e.g. uint8).

    Returns:
        float64 (N,) in [0, 1]; 1.0 for identical images.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms_ssim

    x = torch.as_tensor(np.asarray(a), dtype=torch.float64).unsqueeze(1)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64).unsqueeze(1)
    coarsest = min(x.shape[-2:]) // 2 ** (scales - 1)
    size = min(win_size, coarsest - (1 - coarsest % 2))  # odd and no larger than the coarsest image
    pad = int(3.5 * sigma + 0.5)  # torchmetrics' Gaussian half-width; reflect padding needs a larger image
    if size < 3 or coarsest <= pad:
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are too small for {scales} MS-SSIM scales")
    w = np.asarray(MS_SSIM_WEIGHTS[:scales])
    out = tm_ms_ssim(
        x,
        y,
        kernel_size=size,
        sigma=sigma,
        reduction="none",
        data_range=data_range,
        betas=tuple(float(v) for v in w / w.sum()),
        normalize="relu",
    )
    return out.numpy().astype(np.float64)


def ms_ssim_diversity(
    images: np.ndarray, labels: Sequence[str], n_pairs: int = 200, seed: int = 0, scales: int = 3
) -> dict[str, float]:
    """Mean MS-SSIM of random same-class pairs of distinct images, per class (lower = more diverse)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out = {}
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        i = rng.choice(idx, n_pairs)
        j = rng.choice(idx, n_pairs)
        j = np.where(i == j, idx[(np.searchsorted(idx, j) + 1) % len(idx)], j)  # never pair an image with itself
        out[c] = float(ms_ssim(images[i], images[j], scales=scales).mean())
    return out


# Report


def _set_metrics(real: np.ndarray, syn: np.ndarray, k: int, kid_subset_size: int, seed: int) -> dict:
    """FID, KID and PRDC of one (real, synthetic) pair of feature sets; PRDC needs > k samples each."""
    out = {"n_real": int(len(real)), "n_synthetic": int(len(syn))}
    if min(len(real), len(syn)) < 2:
        return out
    kid_mean, kid_std = kernel_inception_distance(real, syn, n_subsets=50, subset_size=kid_subset_size, seed=seed)
    out.update(fid=frechet_distance(real, syn), kid=kid_mean, kid_std=kid_std)
    if min(len(real), len(syn)) > k:
        out.update(prdc(real, syn, k))
    return out


def fidelity_report(
    real_feats: np.ndarray,
    syn_feats: np.ndarray,
    real_labels: Sequence[str],
    syn_labels: Sequence[str],
    k: int = 5,
    real_images: np.ndarray | None = None,
    syn_images: np.ndarray | None = None,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """Overall and per-class FID/KID/PRDC, plus same-class MS-SSIM diversity when images are given.

    Args:
        real_feats, syn_feats: (N, D) / (M, D) features from one in-domain encoder.
        real_labels, syn_labels: class name per row.
        k: PRDC neighbourhood size (Naeem et al. use 5).
        real_images, syn_images: uint8 (N, H, W) for MS-SSIM diversity (optional).
    """
    real_labels, syn_labels = np.asarray(real_labels), np.asarray(syn_labels)
    report = {"overall": _set_metrics(real_feats, syn_feats, k, kid_subset_size, seed), "per_class": {}}
    for c in sorted(set(real_labels.tolist()) | set(syn_labels.tolist())):
        report["per_class"][c] = _set_metrics(
            real_feats[real_labels == c], syn_feats[syn_labels == c], k, kid_subset_size, seed
        )
    if real_images is not None and syn_images is not None:
        report["ms_ssim"] = {
            "real": ms_ssim_diversity(real_images, real_labels, seed=seed),
            "synthetic": ms_ssim_diversity(syn_images, syn_labels, seed=seed),
        }
    return report


# Reference-encoder fidelity (what reports print)


def kid_interval(feats_a: np.ndarray, feats_b: np.ndarray, n_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """Unbiased KID with a conservative 95% interval: mean ± 1.96 sd over half-size subsets.

    Each subset draws half of each set without replacement; the spread of half-set
    estimates is wider than the full-set estimate's, so the interval errs wide. Used
    for the planted check "two disjoint real halves: KID's interval contains 0".
    """
    m = max(2, min(len(feats_a), len(feats_b)) // 2)
    mean, sd = kernel_inception_distance(feats_a, feats_b, n_subsets=n_subsets, subset_size=m, seed=seed)
    return {"kid": mean, "kid_ci_low": mean - 1.96 * sd, "kid_ci_high": mean + 1.96 * sd, "kid_subset": m}


def fid_equal_n(feats_a: np.ndarray, feats_b: np.ndarray, seed: int = 0) -> tuple[float, int]:
    """FID on equal-sized sets (the larger one subsampled, seeded): FID's bias depends on n, so n is stated."""
    n = min(len(feats_a), len(feats_b))
    rng = np.random.default_rng(seed)
    a = feats_a if len(feats_a) == n else feats_a[np.sort(rng.choice(len(feats_a), n, replace=False))]
    b = feats_b if len(feats_b) == n else feats_b[np.sort(rng.choice(len(feats_b), n, replace=False))]
    return frechet_distance(a, b), n


def reference_metrics(real_feats: np.ndarray, syn_feats: np.ndarray, k: int = 5, seed: int = 0) -> dict:
    """KID with interval, FID at equal n (with n), PRDC of one pair of reference-feature sets."""
    out = {"n_real": int(len(real_feats)), "n_synthetic": int(len(syn_feats))}
    if min(len(real_feats), len(syn_feats)) < 4:
        return out
    out.update(kid_interval(real_feats, syn_feats, seed=seed))
    out["fid"], out["fid_n"] = fid_equal_n(real_feats, syn_feats, seed=seed)
    if min(len(real_feats), len(syn_feats)) > k:
        out.update(prdc(real_feats, syn_feats, k))
    return out


def reference_fidelity(
    real_images: np.ndarray,
    syn_images: np.ndarray,
    floor_images: np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
    encoder=None,
) -> dict:
    """Fidelity of synthetic images against real ones in the reference encoder's space, with its identity.

    Args:
        real_images: held-out real images (uint8 (N, H, W)), e.g. the val split.
        syn_images: synthetic images (any size; resized to the encoder's).
        floor_images: a second held-out real set (e.g. test): the real-vs-real floor
            ``real`` vs ``floor`` (what the metrics read when nothing differs).
        encoder: a `busgen.measure.reference.ReferenceEncoder` (default: the shipped one).

    Returns:
        {"encoder": identity, "synthetic": metrics, "floor": metrics or None, "detector_auc": AUC}.
    """
    from busgen.measure.privacy.audit import detector_auc
    from busgen.measure.reference import load_reference

    enc = encoder or load_reference()
    real, syn = enc.features(real_images), enc.features(syn_images)
    out = {"encoder": enc.identity(), "synthetic": reference_metrics(real, syn, k, seed)}
    if min(len(real), len(syn)) >= 10:  # 5 folds need a few of each
        out["detector_auc"] = detector_auc(real, syn, seed=seed)["auc"]
    out["floor"] = reference_metrics(real, enc.features(floor_images), k, seed) if floor_images is not None else None
    return out
