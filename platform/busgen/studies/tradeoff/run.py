"""The privacy-utility trade-off of CPSample: one row per protection strength alpha.

For each alpha (0 = unprotected) the same labels, boxes and seeds are sampled, so rows
differ only by the protection. Each row measures

* utility: KID and FID (equal n) against held-out real images on the frozen reference
  encoder (`busgen.measure.reference`, named in the report) and the real-test AUC of a classifier trained on the
  synthetic set alone (``busgen.measure.classify.train_classifier``, validated on real val);
* privacy: the memorisation rate (audit flags against the training images, pixel and
  copy-encoder space) and the DCR membership attack (members = the training split,
  non-members = the other half of the held-out splits) with AUC and TPR at 1% FPR;
* cost: sampling throughput (img/s) on this machine.

The default strength is then chosen by a written rule (``choose_default``), and the rows,
the rule's pick and a utility-versus-privacy plot are written to ``out``. Privacy gains
show only where the generator memorises: on an under-trained generator the sweep mostly
shows what protection costs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from busgen.core.types import (
    DEFAULT_GUIDANCE,
    DEFAULT_PROTECT_MIN_FIT,
    DEFAULT_PROTECT_THRESHOLD,
    DEFAULT_PROTECT_WINDOW,
    SamplerName,
)


class TradeoffConfig(BaseModel):
    """Sweep CPSample's strength: FID, synthetic-only AUC, memorisation, DCR attack and img/s per alpha; plot.

    Sweep CPSample's strength on one generator and its real data.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="generator folder with a protection classifier (``busgen protect``)")
    data_dir: str = Field(
        description="the real dataset: members = member_split (the generator's training data), the rest held out"
    )
    out: str = Field(description="report folder: results.json, tradeoff.md, tradeoff.png")
    member_split: str = Field("train", description="split of data_dir the generator trained on (the members)")
    heldout_splits: list[str] = Field(["val", "test"], description="non-members for the attack, FID reference")
    val_split: str = Field("val", description="early stopping of the synthetic-only classifier (real images)")
    test_split: str = Field("test", description="its AUC is measured here")
    strengths: list[float] = Field(
        [0.0, 0.05, 0.1, 0.2], description="alpha values; 0 = unprotected (must be included)"
    )
    threshold: float = Field(
        DEFAULT_PROTECT_THRESHOLD, ge=0.5, lt=1.0, description="confidence gate of the protection classifier"
    )
    window: tuple[float, float] = Field(
        DEFAULT_PROTECT_WINDOW, description="timestep window (fractions of T) where protection acts"
    )
    protect_min_fit: float = Field(
        DEFAULT_PROTECT_MIN_FIT, ge=0, le=1, description="refuse a protection classifier that fits its labels worse"
    )
    n: int = Field(300, ge=8, description="synthetic images per alpha, class proportions of the training split")
    steps: int = Field(20, ge=1, description="denoising steps")
    sampler: SamplerName = Field("ddim", description="ddim | ddpm | dpmpp")
    guidance: float = Field(DEFAULT_GUIDANCE, description="classifier-free guidance scale")
    batch_size: int = Field(32, ge=1, description="images per sampling batch")
    seed: int = Field(0, description="labels, boxes and noise (the same for every strength)")
    classifier: dict = Field(
        {"epochs": 15, "patience": 4}, description="overrides of ClassifierConfig.small() for the downstream AUC"
    )
    encoder_epochs: int = Field(15, ge=1, description="copy encoder (FID, audit and attack features)")
    auc_tolerance: float = Field(
        0.01, ge=0, description="the default may lose at most this much synthetic-only AUC ..."
    )
    fid_tolerance: float = Field(0.10, ge=0, description="... and raise FID by at most this fraction")
    target_mia_auc: float = Field(0.55, description="privacy targets the default should meet (reported, not enforced)")
    target_memorization: float = Field(
        0.005, description="privacy target the default should meet (reported, not enforced)"
    )
    torch_threads: int = Field(0, description="0 = torch's default")

    @field_validator("strengths")
    @classmethod
    def _has_unprotected(cls, v: list[float]) -> list[float]:
        if 0.0 not in v or any(a < 0 for a in v):
            raise ValueError(f"error: strengths must be >= 0 and include 0 (the unprotected reference), got {v}")
        return sorted(set(v))


def mia_auc(row: dict) -> float:
    """The attack AUC a row is judged by: the stronger of the two spaces (pixel, copy encoder)."""
    return max(v["auc"] for v in row["dcr"].values())


def choose_default(rows: list[dict], cfg: TradeoffConfig) -> dict:
    """Pick the default strength among alpha > 0; returns {"strength", "rule", "meets_targets"}.

    Rule: keep the strengths whose synthetic-only AUC is within ``auc_tolerance`` of the
    unprotected row and whose FID is at most ``fid_tolerance`` worse (utility kept). Among them,
    the smallest one that meets both privacy targets (least cost); if none does, the largest
    (most protection at an acceptable cost). If no alpha > 0 keeps utility, the smallest alpha > 0.
    """
    base = next(r for r in rows if r["strength"] == 0)
    protected = [r for r in rows if r["strength"] > 0]
    if not protected:
        return {"strength": 0.0, "rule": "no alpha > 0 in the sweep", "meets_targets": False}

    def keeps_utility(r: dict) -> bool:
        auc_ok = not np.isfinite(base["auc"]) or r["auc"] >= base["auc"] - cfg.auc_tolerance
        return auc_ok and r["fid"] <= base["fid"] * (1 + cfg.fid_tolerance)

    def private(r: dict) -> bool:
        return mia_auc(r) <= cfg.target_mia_auc and r["memorization_rate"] < cfg.target_memorization

    kept = [r for r in protected if keeps_utility(r)]
    if kept and any(private(r) for r in kept):
        pick, rule = min((r for r in kept if private(r)), key=lambda r: r["strength"]), "smallest alpha meeting all"
    elif kept:
        pick, rule = max(kept, key=lambda r: r["strength"]), "largest alpha keeping utility (privacy targets missed)"
    else:
        pick, rule = min(protected, key=lambda r: r["strength"]), "smallest alpha > 0 (none keeps utility)"
    return {"strength": pick["strength"], "rule": rule, "meets_targets": private(pick) and keeps_utility(pick)}


def sample_plan(labels: list[str], classes: list[str], n: int, seed: int) -> list[str]:
    """``n`` labels in the training split's class proportions (largest remainders), in a seeded order."""
    counts = np.array([labels.count(c) for c in classes], dtype=float)
    if counts.sum() == 0:
        raise ValueError(f"error: the member split has none of the generator's classes {classes}")
    share = counts / counts.sum() * n
    k = np.floor(share).astype(int)
    k[np.argsort(-(share - k))[: n - k.sum()]] += 1
    plan = [c for c, m in zip(classes, k) for _ in range(m)]
    return [plan[i] for i in np.random.default_rng(seed).permutation(n)]


def measure(
    syn: np.ndarray,
    syn_labels: list[str],
    real: dict,
    encoder,
    cfg: TradeoffConfig,
    classes: list[str],
) -> dict:
    """Utility and privacy numbers of one synthetic set (uint8 (N, H, W)) against the real splits."""
    import torch

    from busgen.measure.classify import evaluate, train_classifier
    from busgen.measure.fidelity import fid_equal_n, kid_interval
    from busgen.measure.metrics import label_indices
    from busgen.measure.privacy import audit, dcr
    from busgen.model.classifier import ClassifierConfig, to_tensor

    members = real["members"]
    mem = audit.audit_memorization(syn, members[0], encoder)
    ccfg = ClassifierConfig.small(**{"image_size": syn.shape[-1], "seed": cfg.seed, **cfg.classifier})
    model, history = train_classifier(syn, syn_labels, real["val"][0], real["val"][1], ccfg, classes)
    x_te = to_tensor(real["test"][0], ccfg.image_size)
    y_te = torch.from_numpy(label_indices(real["test"][1], classes))
    test = evaluate(model, x_te, y_te, classes, ccfg.positive)
    syn_ref = real["reference"].features(syn)
    fid, fid_n = fid_equal_n(real["held_ref"], syn_ref, seed=cfg.seed)
    return {
        "fid": fid,
        "fid_n": fid_n,
        "kid": kid_interval(real["held_ref"], syn_ref, seed=cfg.seed)["kid"],
        "auc": test["val_auc"],
        "accuracy": test["val_acc"],
        "classifier_epochs": len(history),
        "memorization_rate": float(mem.flagged.mean()),
        "copy_rate": float(mem.is_copy.mean()),
        "dcr": dcr.dcr_membership(members[0], real["attack_non_members"], syn, encoder),
    }


def read_real(cfg: TradeoffConfig, classes: list[str]) -> dict:
    from busgen.measure.arrays import read_splits

    return {
        "members": read_splits(cfg.data_dir, [cfg.member_split], None),
        "held": read_splits(cfg.data_dir, cfg.heldout_splits, None),
        "val": read_splits(cfg.data_dir, [cfg.val_split], classes),
        "test": read_splits(cfg.data_dir, [cfg.test_split], classes),
    }


def run_tradeoff(cfg: TradeoffConfig, log=print) -> dict:
    """Sample, measure and report every strength; returns the results (also written to ``out/results.json``)."""
    import torch

    from busgen.measure.privacy.dcr import split_non_members
    from busgen.measure.privacy.encoder import CopyEncoderConfig, disjoint_images, train_copy_encoder
    from busgen.measure.reference import load_reference
    from busgen.model import generator, protect
    from busgen.studies.tradeoff.report import write_report
    from busgen.train.protect import to_size

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    t_start = time.time()
    gen = generator.load(cfg.model, device="cuda" if torch.cuda.is_available() else "cpu")
    # fails early, with the remedy, when there is no classifier or it did not fit its labels (fail closed)
    protect_meta = protect.check_protect_fit(cfg.model, cfg.protect_min_fit)
    classes = list(gen.class_names)
    real = read_real(cfg, classes)
    size = gen.image_size  # the generator saw its training images at its own size: compare there
    for key in ("members", "held", "val", "test"):
        real[key] = (to_size(real[key][0], size), *real[key][1:])
    # The copy encoder learns on half of the held-out images: disjoint from the members it audits and from
    # the other half, the DCR attack's non-members (trained on members, it confounds that attack).
    held = disjoint_images(real["held"][0], real["members"][0])  # a byte-identical copy of a member is no non-member
    enc_images, real["attack_non_members"] = split_non_members(held, cfg.seed)
    encoder = train_copy_encoder(
        enc_images,
        epochs=cfg.encoder_epochs,
        seed=cfg.seed,
        cfg=CopyEncoderConfig(image_size=size),
        data=f"half of splits {'+'.join(cfg.heldout_splits)} of {cfg.data_dir}",
    )
    real["reference"] = load_reference()
    real["held_ref"] = real["reference"].features(real["held"][0])
    domain = real["members"][3][0] if real["members"][3] and real["members"][3][0] in gen.domain_names else None
    labels = sample_plan(list(real["members"][1]), classes, cfg.n, cfg.seed)
    rows, out = [], Path(cfg.out)
    for alpha in cfg.strengths:
        kw = {"protect": "cpsample", "protect_strength": alpha} if alpha > 0 else {"protect": "none"}
        t0 = time.perf_counter()
        syn = gen.sample(
            labels,
            domain,
            None,
            steps=cfg.steps,
            guidance=cfg.guidance,
            seed=cfg.seed,
            sampler=cfg.sampler,
            batch_size=cfg.batch_size,
            protect_threshold=cfg.threshold,
            protect_window=tuple(cfg.window),
            protect_min_fit=cfg.protect_min_fit,
            **kw,
        )
        ips = len(labels) / (time.perf_counter() - t0)
        row = {"strength": alpha, "img_per_s": ips, **measure(syn, labels, real, encoder, cfg, classes)}
        rows.append(row)
        out.mkdir(parents=True, exist_ok=True)  # rows so far: a run cut short still leaves what it measured
        (out / "rows.partial.json").write_text(json.dumps(rows, indent=2, default=float))
        log(
            f"[tradeoff] alpha {alpha:g}: FID {row['fid']:.3f} AUC {row['auc']:.3f} mem {row['memorization_rate']:.3f} "
            f"MIA {mia_auc(row):.3f} {ips:.2f} img/s ({time.time() - t_start:.0f} s)"
        )
    results = {
        "config": cfg.model_dump(mode="json"),
        "generator_model_id": gen.model_id,
        "reference_encoder": real["reference"].identity(),
        "protect": {k: protect_meta.get(k) for k in ("protect_id", "fit_accuracy", "fitted", "epochs", "n_images")},
        "rows": rows,
        "default": choose_default(rows, cfg),
        "seconds": round(time.time() - t_start, 1),
    }
    write_report(results, out)
    d = results["default"]
    results["summary"] = (
        f"{len(rows)} strengths on {cfg.model}: default alpha {d['strength']:g} ({d['rule']}) -> {cfg.out}"
    )
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "rows.partial.json").unlink(missing_ok=True)
    return results
