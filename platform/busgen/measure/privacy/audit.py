"""Privacy audit of synthetic data: memorisation, membership inference, real-vs-synthetic detection.

A generative model trained on patient images must not hand those images back.
Three complementary checks:

1. Nearest-neighbour memorisation audit (exact, dense): each synthetic image is matched to its
   closest real *training* images in two spaces -- blurred, downsampled pixels
   (shifts and flips matched; Carlini et al.'s own space for near-exact copies)
   and the augmentation-invariant copy encoder of `busgen.measure.privacy.encoder`.
   A match is a copy when it is much closer than the synthetic image's other
   training neighbours: the Carlini et al. (2023) ratio d(syn, NN_1) / mean_{j<=k}
   d(syn, NN_j), with k scaled to the training-set size (`knn_k`), is small -- or
   when it is closer than an absolute similarity floor whatever the ratio. The
   denominator is measured around the *synthetic* image, so a copy of a training
   image that has near-duplicates in train (42% of BUSI train images do) still
   gets a small ratio. The copy encoder must be trained on images disjoint from
   the audited members (checked here; the audit records what trained it).
2. Membership inference by denoising error (Carlini et al. 2023; Matsumoto et al.
   2023): a memorising diffusion model denoises its training images better than
   unseen ones. The attack takes any ``denoise_fn`` so it plugs into whichever
   UNet + scheduler the generator exposes.
3. A real-vs-synthetic detector: cross-validated logistic regression on encoder
   features; AUC near 0.5 means synthetic data is hard to tell apart from real.

`share_filter` then writes a shareable copy of a synthetic set without flagged rows.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from busgen.data.imageio import to_model_tensor
from busgen.measure import metrics


@dataclass
class AuditConfig:
    """Descriptor settings and flagging thresholds of the memorisation audit."""

    pixel_size: int = 32  # pixel descriptors: images area-downsampled to this side
    blur_sigma: float = 1.0  # Gaussian blur (px at pixel_size): compares anatomy, not speckle grain
    max_shift_px: int = 2  # match translations up to this many px at pixel_size (25 views at 2)
    match_flips: bool = True  # also match horizontally flipped training images (probe orientation varies)
    similar_threshold: float = 0.5  # report the share of synthetic images with top-1 cosine above this
    knn_per: int = 20  # k of the ratio's denominator = n_train / knn_per (a 5% neighbourhood) ...
    knn_min: int = 3  # ... at least this (k = 2 misses shifted copies of duplicated members, docs/privacy.md)
    knn_max: int = 50  # ... at most this (Carlini et al.'s k)
    copy_pixel_sim: float = 0.98  # pixel cosine >= this: copy whatever the ratio (the absolute floor)
    copy_ratio: float = 1 / 3  # pixel-space k-NN ratio <= this: copy (Carlini et al. use 1/3)
    mem_ratio: float = 0.15  # encoder-space k-NN ratio <= this: memorised (1/3 flagged 1.2% of fresh phantoms)
    mem_min_sim: float = 0.5  # ... and encoder cosine at least this (guards isolated outliers)
    mem_floor: float | None = None  # encoder cosine >= this: memorised whatever the ratio (off: fresh NN reach 0.98)


@dataclass
class MemorizationAudit:
    """Per-synthetic-image audit results plus a JSON-friendly summary."""

    ids: np.ndarray  # identifier of each synthetic row (its `index` column, or position)
    pixel_sim: np.ndarray  # cosine to the nearest training image, pixel space
    pixel_nn: np.ndarray  # index of that training image
    pixel_ratio: np.ndarray  # d(syn, NN_1) / mean of d(syn, NN_j), j = 1..k (k nearest training images)
    feature_sim: np.ndarray  # same three in copy-encoder space (nan when no encoder was given)
    feature_nn: np.ndarray
    feature_ratio: np.ndarray
    is_copy: np.ndarray  # bool, pixel-space near-duplicate
    is_memorized: np.ndarray  # bool, encoder-space near-duplicate
    config: AuditConfig = field(default_factory=AuditConfig)
    k: int = 0  # neighbours in the ratio's denominator (`knn_k` of the training-set size)
    encoder_data: str | None = None  # what trained the copy encoder (None: pixel-only audit)

    @property
    def flagged(self) -> np.ndarray:
        return self.is_copy | self.is_memorized

    @property
    def training_images_copied(self) -> np.ndarray:
        """Distinct training indices some flagged synthetic image matches (in the space that flagged it)."""
        hits = [self.pixel_nn[self.is_copy], self.feature_nn[self.is_memorized & ~self.is_copy]]
        return np.unique(np.concatenate(hits).astype(np.int64))

    def summary(self) -> dict:
        """Headline numbers for reports: flagged synthetic images, training images copied, similarity statistics.

        ``n_copies`` / ``n_mem`` count synthetic images flagged in pixel / copy-encoder space;
        ``n_flagged`` (either space) over ``n_synthetic`` is the memorisation rate, and
        ``n_train_copied`` counts the distinct training images they reproduce.
        """
        n = len(self.ids)
        out = {
            "n_synthetic": int(n),
            "n_copies": int(self.is_copy.sum()),
            "n_mem": int(self.is_memorized.sum()),
            "n_flagged": int(self.flagged.sum()),
            "memorization_rate": float(self.flagged.sum() / n) if n else 0.0,
            "n_train_copied": int(len(self.training_images_copied)),
            "knn_k": int(self.k),
            "encoder_data": self.encoder_data,
            "config": asdict(self.config),
        }
        for space, sim, ratio in (
            ("pixel", self.pixel_sim, self.pixel_ratio),
            ("feature", self.feature_sim, self.feature_ratio),
        ):
            if len(sim) and np.isfinite(sim).all():
                out[space] = {
                    "mean_top1_sim": float(sim.mean()),
                    "p95_top1_sim": float(np.percentile(sim, 95)),
                    "share_sim_above_threshold": float((sim > self.config.similar_threshold).mean()),
                    "min_ratio": float(ratio.min()),
                    "median_ratio": float(np.median(ratio)),
                }
        return out

    def closest_pairs(self, k: int = 8, space: str = "pixel") -> list[tuple[int, int, float]]:
        """The k most similar (synthetic position, training index, cosine) pairs, most similar first."""
        sim, nn = (self.pixel_sim, self.pixel_nn) if space == "pixel" else (self.feature_sim, self.feature_nn)
        order = np.argsort(-sim)[:k]
        return [(int(i), int(nn[i]), float(sim[i])) for i in order]


# Nearest neighbours


def pixel_descriptors(images: np.ndarray, cfg: AuditConfig, flip: bool = False) -> list[np.ndarray]:
    """Blurred, area-downsampled pixel views, zero-mean and unit-norm (inner product = Pearson correlation).

    Returns one (N, D) array per translation (dy, dx) in [-max_shift_px, max_shift_px]^2:
    each is the same-size crop of the downsampled image moved by (dy, dx), so
    comparing every view of a query with the centre view of the training images
    finds copies that were shifted by a few pixels. The centre view comes first.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
    if flip:
        x = x.flip(-1)
    x = F.interpolate(x, size=(cfg.pixel_size, cfg.pixel_size), mode="area")
    if cfg.blur_sigma > 0:
        x = _gaussian_blur(x, cfg.blur_sigma)
    s, p = cfg.max_shift_px, cfg.pixel_size
    shifts = sorted(((dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)), key=lambda d: d != (0, 0))
    return [_unit_rows(x[:, 0, s + dy : p - s + dy, s + dx : p - s + dx]) for dy, dx in shifts]


def _unit_rows(x: torch.Tensor) -> np.ndarray:
    x = x.flatten(1)
    return F.normalize(x - x.mean(1, keepdim=True), dim=1).numpy().astype(np.float32)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with replicate padding."""
    radius = max(1, int(round(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def _distance(sim: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors with cosine `sim`."""
    return np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, None))


def knn_k(n_train: int, cfg: AuditConfig) -> int:
    """Neighbours in the ratio's denominator: n_train / knn_per, clipped to [knn_min, knn_max] and to n_train.

    A fixed k = 50 is a third of a 140-image support set: the denominator then reaches
    far-away images and fresh non-members get small ratios (median 0.32 on one such set).
    """
    return int(min(n_train, np.clip(round(n_train / cfg.knn_per), cfg.knn_min, cfg.knn_max)))


def knn_similarities(
    query_views: Sequence[np.ndarray], entries: Sequence[np.ndarray], k: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each query to its k most similar training images (exact, dense).

    Args:
        query_views: one or more (M, D) unit-vector arrays, alternative views of the same M queries.
        entries: one or more (N, D) unit-vector arrays, alternative entries of the same N training
            images (e.g. original and flipped); an image's similarity is its best view x entry.
        k: neighbours kept, 1 <= k <= N.

    Returns:
        (similarity (M, k) sorted high to low, training index (M, k)).
    """
    m = len(query_views[0])
    sims, idx = np.zeros((m, k)), np.zeros((m, k), dtype=np.int64)
    for start in range(0, m, chunk):
        best = None  # (c, N): best view x entry per training image
        for view in query_views:
            q = view[start : start + chunk]
            s = np.max([q @ e.T for e in entries], axis=0)
            best = s if best is None else np.maximum(best, s)
        top = np.argpartition(-best, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(best, top, 1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        sims[start : start + chunk] = np.take_along_axis(top_sim, order, 1)
        idx[start : start + chunk] = np.take_along_axis(top, order, 1)
    return sims, idx


def _space_audit(
    syn_views: Sequence[np.ndarray], entries: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 sim, NN index, Carlini k-NN ratio) of synthetic vs training images in one space.

    The ratio d(syn, NN_1) / mean_{j<=k} d(syn, NN_j) is measured around the synthetic image:
    a copy of a training image that has near-duplicates in train has d(syn, NN_1) ~ 0 while
    the mean still reaches its other neighbours, so it is flagged (the old denominator,
    d(NN_1, NN_1's own nearest training image), was ~0 there too and such copies never passed).
    """
    sims, idx = knn_similarities(syn_views, entries, k)
    d = _distance(sims)  # (M, k)
    ratio = d[:, 0] / np.maximum(d.mean(1), 1e-12)  # an exact copy (d = 0) gets 0 even when all k are duplicates
    return sims[:, 0], idx[:, 0], ratio


def audit_memorization(
    syn_images: np.ndarray,
    train_images: np.ndarray,
    encoder=None,
    cfg: AuditConfig | None = None,
    syn_ids: Sequence | None = None,
) -> MemorizationAudit:
    """Nearest-neighbour memorisation audit of synthetic images against the real training set.

    A synthetic image is a pixel copy when its pixel cosine to a training image is at least
    ``copy_pixel_sim`` or its pixel k-NN ratio is at most ``copy_ratio``; it is memorised
    when, in copy-encoder space, its ratio is at most ``mem_ratio`` with cosine at least
    ``mem_min_sim``, or its cosine reaches ``mem_floor`` (off by default).

    Args:
        syn_images: uint8 (M, H, W) synthetic images.
        train_images: uint8 (N, H, W) the generator's real training images (N >= 2).
        encoder: a `busgen.measure.privacy.encoder.CopyEncoder` trained on images *disjoint* from
            ``train_images`` (e.g. held-out splits), or None for a pixel-only audit.
        cfg: descriptor settings and thresholds.
        syn_ids: identifiers of the synthetic rows (default: positions), used by `share_filter`.

    Raises:
        ValueError: fewer than 2 training images, or the encoder was trained on some of them.
    """
    cfg = cfg or AuditConfig()
    if len(train_images) < 2:
        raise ValueError(f"the audit needs at least 2 training images, got {len(train_images)}")
    m, k = len(syn_images), knn_k(len(train_images), cfg)
    # 1. pixel space: all shifted views of each query against centre (and flipped centre) training views
    entries = [pixel_descriptors(train_images, cfg)[0]]
    if cfg.match_flips:
        entries.append(pixel_descriptors(train_images, cfg, flip=True)[0])
    p_sim, p_nn, p_ratio = _space_audit(pixel_descriptors(syn_images, cfg), entries, k)
    # 2. copy-encoder space
    f_sim, f_nn, f_ratio = np.full(m, np.nan), np.full(m, -1), np.full(m, np.nan)
    encoder_data = None
    if encoder is not None:
        from busgen.measure.privacy.encoder import encode, require_disjoint

        encoder_data = require_disjoint(encoder, train_images, "audited training images")
        entries = [encode(encoder, train_images)]
        if cfg.match_flips:
            entries.append(encode(encoder, train_images[:, :, ::-1].copy()))
        f_sim, f_nn, f_ratio = _space_audit([encode(encoder, syn_images)], entries, k)
    # 3. flags
    is_copy = (p_sim >= cfg.copy_pixel_sim) | (p_ratio <= cfg.copy_ratio)
    f_sim0, f_ratio0 = np.nan_to_num(f_sim, nan=-1.0), np.nan_to_num(f_ratio, nan=np.inf)
    is_mem = (f_ratio0 <= cfg.mem_ratio) & (f_sim0 >= cfg.mem_min_sim)
    if cfg.mem_floor is not None:
        is_mem |= f_sim0 >= cfg.mem_floor
    ids = np.asarray(syn_ids) if syn_ids is not None else np.arange(m)
    return MemorizationAudit(
        ids, p_sim, p_nn, p_ratio, f_sim, f_nn, f_ratio, is_copy, is_mem, cfg, k=k, encoder_data=encoder_data
    )


def save_closest_pairs_png(
    path: str | Path, syn: np.ndarray, real: np.ndarray, pairs: Sequence[tuple[int, int, float]], k: int = 8
) -> Path:
    """Picture of the k closest (synthetic | nearest real) pairs, one pair per row, similarity in the title.

    Reviewers must *see* the closest matches: a number alone hides whether a match
    is a copy or just the same anatomy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(pairs)[:k]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(3.2, 1.6 * max(len(pairs), 1)), squeeze=False)
    for row, (i, j, sim) in enumerate(pairs):
        for col, (img, name) in enumerate(((syn[i], f"syn {i}"), (real[j], f"train {j}"))):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{name}" + (f"  cos={sim:.3f}" if col == 0 else ""), fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# Membership inference

DenoiseFn = Callable[[torch.Tensor, int], torch.Tensor]


def denoising_error_scores(
    denoise_fn: DenoiseFn,
    images: np.ndarray,
    timesteps: Sequence[int] = (50, 100, 200),
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Per-image denoising error averaged over timesteps: low error suggests a training member.

    Args:
        denoise_fn: (x0 float32 (B, 1, H, W) in [-1, 1], t) -> per-image MSE (B,). It draws
            its own noise from torch's global RNG, which is seeded here per (batch, t) call
            so scores are reproducible and every image sees the same noise whatever the batching.
        images: uint8 (N, H, W).
        timesteps: diffusion timesteps to probe (small-to-mid t carry the most membership signal).
        seed: base seed.

    Returns:
        float64 (N,) mean error per image.
    """
    x = to_model_tensor(images)
    scores = np.zeros(len(x), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            for j, t in enumerate(timesteps):
                torch.manual_seed(seed * 1_000_003 + start * 1009 + j)
                scores[start : start + len(xb)] += denoise_fn(xb, int(t)).detach().cpu().double().numpy()
    return scores / len(timesteps)


def membership_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, float]:
    """AUC and TPR at 1% FPR of the attack "lower error => member" (0.5 AUC = no leakage)."""
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    score = -np.r_[member_scores, nonmember_scores]
    roc = metrics.roc_curve_data(y, score)
    fpr, tpr = np.asarray(roc["fpr"]), np.asarray(roc["tpr"])
    return {"auc": metrics.roc_auc(y, score), "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max(initial=0.0))}


# Real vs synthetic detection


def detector_auc(real_feats: np.ndarray, syn_feats: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Cross-validated AUC of a logistic-regression real-vs-synthetic detector on features.

    0.5 = indistinguishable; near 1.0 = synthetic images carry an obvious signature.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real_feats, syn_feats]).astype(np.float64)
    y = np.r_[np.zeros(len(real_feats)), np.ones(len(syn_feats))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return {"auc": metrics.roc_auc(y, p), "n_real": int(len(real_feats)), "n_synthetic": int(len(syn_feats))}


# Sharing


def share_filter(
    syn_dir: str | Path,
    out_dir: str | Path,
    audit: MemorizationAudit,
    id_column: str = "index",
    record: dict | None = None,
    table=None,
) -> dict:
    """Write a copy of a synthetic Parquet set holding only unflagged rows, plus ``audit.json``.

    Fails closed: the set is listed by ``busgen.measure.privacy.listing.read_set`` (the audit's
    reader; pass its ``table`` to reuse it), and nothing is written unless the audit saw
    exactly the rows of the set: a row count or an id set that differs is refused, never
    dropped or passed. ``record`` (inputs, fingerprints, checks, attack AUCs) is stored in
    ``audit.json`` with the summary and the removed ids.

    Raises:
        DatasetError: the set's rows are not the audited rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from busgen.data.dataset import DatasetError
    from busgen.measure.privacy.listing import read_set

    table = table if table is not None else read_set(syn_dir).table
    remedy = "audit the set as it is now (busgen share-filter reads and audits it in one go)"
    if table.num_rows != len(audit.ids):
        raise DatasetError(f"{syn_dir} holds {table.num_rows} rows but the audit saw {len(audit.ids)}: {remedy}")
    ids = np.asarray(table[id_column].to_pylist()) if id_column in table.column_names else np.arange(table.num_rows)
    if len(np.unique(ids)) != len(ids) or set(ids.tolist()) != set(audit.ids.tolist()):
        raise DatasetError(f"{syn_dir}: its row ids are not the {len(audit.ids)} audited ids (or repeat): {remedy}")
    flagged_ids = audit.ids[audit.flagged]
    kept = table.filter(pa.array(~np.isin(ids, flagged_ids)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(kept, out / "part-00000.parquet")
    for meta in ("manifest.json", "dataset.json"):  # keep provenance with the filtered copy
        if (Path(syn_dir) / meta).is_file():
            shutil.copy(Path(syn_dir) / meta, out / meta)
    report = {
        **(record or {}),
        **audit.summary(),
        "rows_in": int(table.num_rows),
        "rows_out": int(kept.num_rows),
        "rows_unaudited": 0,
        "removed_ids": [v.item() if hasattr(v, "item") else v for v in flagged_ids],
    }
    (out / "audit.json").write_text(json.dumps(report, indent=2, default=str))
    return report
