"""The feature-space parts of a suite: the in-domain encoder, fidelity, privacy and the sampler/steps grid.

Each part reads its images from the suite's `busgen.eval.data.SuiteData` (decoded once per suite).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busgen.eval import sweep
from busgen.eval.data import SuiteData
from busgen.eval.results import (
    Detector,
    EncoderIdentity,
    FidelityResult,
    Membership,
    Memorization,
    PrivacyResult,
    ReferenceFidelity,
    SamplerStepsResult,
    SamplerStepsRow,
    UtilityResult,
)
from busgen.eval.suites import SuiteConfig
from busgen.eval.trials import utility_trial
from busgen.eval.utility.grid import trial_base
from busgen.model import classifier

REAL_FEATURES = "real_features.npz"  # under work/: features of the held-out real images
REF_REAL_FEATURES = "real_features_reference.npz"  # the same images in the reference encoder's space


def encoder_dir(cfg: SuiteConfig, real_dir: str, utility: UtilityResult | None, work: Path) -> str:
    """The in-domain encoder: the real-only classifier of the utility grid, or one trained here."""
    for t in utility.trials if utility else []:
        if t.ratio == 0 and not t.synthetic_only and t.artifacts:
            return str(Path(t.artifacts) / "classifier")
    base = trial_base(cfg, real_dir, work / "encoder")
    result = utility_trial({**base, "seed": min(cfg.utility.seeds), "n_boot": 10, "external_test": {}})
    return str(Path(result["artifacts"]) / "classifier")


def run_fidelity(
    cfg: SuiteConfig, data: SuiteData, real_dir: str, syn_dir: str, enc_dir: str, out: Path
) -> FidelityResult:
    """FID/KID/PRDC/MS-SSIM of synthetic vs held-out real, a real-vs-real floor, detector AUC and sample arrays."""
    from busgen.measure import fidelity
    from busgen.measure.privacy import audit as privacy

    enc, _, _ = classifier.load_classifier(enc_dir)
    real, real_labels, _, _ = data.splits(real_dir, cfg.fidelity.real_splits, cfg.classes)
    train, train_labels, _, _ = data.splits(real_dir, ["train"], cfg.classes)
    syn, syn_labels, _, _ = data.splits(syn_dir, None, cfg.classes)
    f_real, f_train, f_syn = (classifier.embed(enc, x) for x in (real, train, syn))
    kid_size = min(1000, len(f_real), len(f_syn))
    report = fidelity.fidelity_report(f_real, f_syn, real_labels, syn_labels, cfg.fidelity.k, real, syn, kid_size)
    floor = fidelity.fidelity_report(
        f_real, f_train, real_labels, train_labels, cfg.fidelity.k, kid_subset_size=min(kid_size, len(f_train))
    )
    np.savez_compressed(out / "samples.npz", **_sample_arrays(real, real_labels, syn, syn_labels, cfg.classes))
    np.savez_compressed(out / "work" / REAL_FEATURES, features=f_real)
    return FidelityResult(
        **report,
        real_vs_real=floor["overall"],  # what FID looks like between two real sets with this encoder
        detector=Detector(**privacy.detector_auc(f_real, f_syn)),
        reference=reference_part(cfg, data, real_dir, syn),
    )


def reference_part(cfg: SuiteConfig, data: SuiteData, real_dir: str, syn: np.ndarray) -> ReferenceFidelity:
    """Headline fidelity on the frozen reference encoder: synthetic vs the first held-out split, floor vs the second.

    With ``real_splits`` [val, test] the synthetic row and the floor share one real
    reference (val), so their KID/FID read on the same scale.
    """
    from busgen.measure.fidelity import reference_fidelity

    splits = list(cfg.fidelity.real_splits)
    ref_real = data.splits(real_dir, splits[:1], cfg.classes)[0]
    floor = data.splits(real_dir, splits[1:2], cfg.classes)[0] if len(splits) > 1 else None
    return ReferenceFidelity(**reference_fidelity(ref_real, syn, floor, cfg.fidelity.k, seed=0))


def _sample_arrays(real, real_labels, syn, syn_labels, classes, per_class: int = 8) -> dict[str, np.ndarray]:
    """First ``per_class`` real and synthetic images of each class, for the report's sample grid."""
    out = {}
    for c in classes:
        out[f"R: {c}"] = real[np.asarray(real_labels) == c][:per_class]
        out[f"S: {c}"] = syn[np.asarray(syn_labels) == c][:per_class]
    return out


def run_privacy(
    cfg: SuiteConfig, data: SuiteData, real_dir: str, syn_dir: str, model_dir: str | None, out: Path
) -> PrivacyResult:
    """Memorisation audit (+ nearest-pair PNG) against the generator's training images; membership inference."""
    from busgen.measure.privacy import audit as privacy
    from busgen.measure.privacy import encoder as encoders

    p = cfg.privacy
    member_dir = str(Path(p.member_dir).resolve()) if p.member_dir else real_dir
    members = data.splits(member_dir, [p.member_split] if p.member_split else None, None)
    if model_dir and not p.member_dir:  # what the generator saw: an adapted model's support set joins the members
        members = members_seen(model_dir, members)
    syn, ids = data.synthetic_with_ids(syn_dir, cfg.classes)
    # The copy encoder learns on held-out images, never on the members it audits (none left: pixel-only audit)
    reference = encoders.disjoint_images(data.splits(real_dir, p.heldout_splits, None)[0], members[0])
    enc = None
    if len(reference) >= 2:
        enc = encoders.train_copy_encoder(
            reference,
            epochs=p.encoder_epochs,
            cfg=encoders.CopyEncoderConfig(image_size=members[0].shape[-1]),
            data=f"splits {'+'.join(p.heldout_splits)} of {real_dir}",
        )
    audit = privacy.audit_memorization(syn, members[0], enc, syn_ids=ids)
    pairs = audit.closest_pairs(p.closest_pairs)
    privacy.save_closest_pairs_png(out / "nn_pairs.png", syn, members[0], pairs, p.closest_pairs)
    return PrivacyResult(
        memorization=Memorization(**audit.summary()),
        closest_pairs=pairs,
        flagged_ids=[int(i) for i in audit.ids[audit.flagged]],
        membership=run_membership(cfg, data, model_dir, members, real_dir) if model_dir else None,
    )


def members_seen(model_dir: str, members: tuple) -> tuple:
    """``members`` united with the support set of an adapted ``model_dir`` (unchanged for a pretrained one).

    An explicit ``privacy.member_dir`` is the override (recorded in the suite's params): its rows alone.
    """
    from busgen.train import provenance

    return provenance.unite(members, provenance.read_support(provenance.training_data(model_dir)))[0]


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, k), replace=False))


def run_membership(cfg: SuiteConfig, data: SuiteData, model_dir: str, members: tuple, real_dir: str) -> Membership:
    """Denoising-error attack: ``n_membership`` training images vs as many held-out real images."""
    import torch

    from busgen.measure.privacy import membership
    from busgen.model import generator

    p = cfg.privacy
    gen = generator.load(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    held = data.splits(real_dir, p.heldout_splits, gen.class_names)
    known = [i for i, c in enumerate(members[1]) if c in gen.class_names]  # classes the generator can condition on
    n = min(p.n_membership, len(known), len(held[0]))
    sets = []
    for (images, labels, boxes, domains), pool, seed in ((members, known, 0), (held, range(len(held[0])), 1)):
        idx = np.asarray(pool)[_subsample(len(pool), n, seed)]
        sets.append(
            {
                "images": images[idx],
                "labels": [labels[i] for i in idx],
                "boxes": [boxes[i] for i in idx],
                "domains": [domains[i] for i in idx],
            }
        )
    return Membership(**membership.membership_report(gen, sets[0], sets[1], timesteps=p.timesteps))


def run_sampler_steps(
    cfg: SuiteConfig, data: SuiteData, real_dir: str, model_dir: str, enc_dir: str, work: Path
) -> SamplerStepsResult:
    """Tune grid over (sampler, steps): FID of each setting against the held-out real features."""
    from busgen.measure.reference import load_reference

    s = cfg.sampler_steps
    encoder = load_reference()
    real_fp = work / REF_REAL_FEATURES
    if not real_fp.is_file():
        real = data.splits(real_dir, cfg.fidelity.real_splits, cfg.classes)[0]
        np.savez_compressed(real_fp, features=encoder.features(real))
    base = {
        "model": model_dir,
        "guidance": s.guidance,
        "classes": cfg.classes,
        "n_per_class": s.n_per_class,
        "encoder_dir": None,
        "real_features": str(real_fp),
        "batch_size": s.batch_size,
        "torch_threads": cfg.torch_threads,
    }
    grid = [{"sampler": a, "steps": int(k)} for a in s.samplers for k in s.steps]
    rows = sweep.run_trials(
        "fid",
        base,
        grid,
        str(work / "tune"),
        f"{cfg.name}-sampler-steps",
        cfg.resources_per_trial,
        cfg.max_concurrent_trials,
    )
    return SamplerStepsResult(rows=[SamplerStepsRow(**r) for r in rows], encoder=EncoderIdentity(**encoder.identity()))
