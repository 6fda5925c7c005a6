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
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from busgen.core.types import (
    DEFAULT_GUIDANCE,
    DEFAULT_PROTECT_FORM,
    DEFAULT_PROTECT_MIN_FIT,
    DEFAULT_PROTECT_THRESHOLD,
    DEFAULT_PROTECT_WINDOW,
    ProtectForm,
    SamplerName,
)

# The rule that picks the default strength, fixed before any run (also printed in every report).
DEFAULT_RULE = (
    "Utility kept: mean synthetic-only AUC over the classifier seeds at most the 80%-power detectable effect "
    "(Welch MDE of the two arms) below the unprotected mean, FID and KID at most 10% above unprotected (KID: or "
    "within 0.001, its noise at n of a few hundred). Private: memorisation < 0.5% and DCR-MIA AUC (max of pixel "
    "and copy-encoder space) <= 0.55. Pick the smallest strength > 0 that keeps utility and is private; if none "
    "is private, the strength with the lowest memorisation among those keeping utility (targets missed, said "
    "so); if none keeps utility, the smallest strength > 0."
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
        [0.0, 100.0, 300.0, 1000.0, 3000.0], description="guidance strengths s; 0 = unprotected (must be included)"
    )
    form: ProtectForm = Field(DEFAULT_PROTECT_FORM, description="paper (s, gate 1 - alpha) | relative (x |eps|)")
    members: Literal["split", "support"] = Field(
        "split",
        description="split: member_split of data_dir; support: the adapted model's support set (<model>/support)",
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
    classifier_seeds: int = Field(5, ge=1, description="synthetic-only classifiers per strength (seed, seed+1, ...)")
    nn_pairs: int = Field(4, ge=0, description="per strength: the synthetic images closest to a member, in nn.png")
    encoder_epochs: int = Field(15, ge=1, description="copy encoder (FID, audit and attack features)")
    auc_tolerance: float = Field(
        0.01, ge=0, description="the default may lose at most this much synthetic-only AUC ..."
    )
    fid_tolerance: float = Field(0.10, ge=0, description="... and raise FID and KID by at most this fraction")
    kid_abs_tolerance: float = Field(0.001, ge=0, description="... or KID by at most this much (its noise floor)")
    target_mia_auc: float = Field(0.55, description="privacy targets the default should meet (reported, not enforced)")
    target_memorization: float = Field(
        0.005, description="privacy target the default should meet (reported, not enforced)"
    )
    torch_threads: int = Field(0, description="0 = torch's default")
    fixture: bool = Field(
        False, description="sweep the closed-form memoriser of 32 phantoms (model and data_dir are then labels only)"
    )

    @field_validator("strengths")
    @classmethod
    def _has_unprotected(cls, v: list[float]) -> list[float]:
        if 0.0 not in v or any(a < 0 for a in v):
            raise ValueError(f"error: strengths must be >= 0 and include 0 (the unprotected reference), got {v}")
        return sorted(set(v))


def mia_auc(row: dict) -> float:
    """The attack AUC a row is judged by: the stronger of the two spaces (pixel, copy encoder)."""
    return max(v["auc"] for v in row["dcr"].values())


def keeps_utility(row: dict, base: dict, cfg: TradeoffConfig) -> bool:
    """AUC within the 80%-power MDE of unprotected (the drop seeds can resolve), FID and KID within tolerance."""
    from busgen.measure.stats import min_detectable_effect

    aucs, base_aucs = row.get("aucs") or [row["auc"]], base.get("aucs") or [base["auc"]]
    if np.isfinite(base["auc"]):
        mde = min_detectable_effect(
            np.std(base_aucs, ddof=1) if len(base_aucs) > 1 else np.nan,
            len(base_aucs),
            np.std(aucs, ddof=1) if len(aucs) > 1 else np.nan,
            len(aucs),
        )
        allowed = mde if np.isfinite(mde) else cfg.auc_tolerance
        auc_ok = float(np.mean(aucs)) >= float(np.mean(base_aucs)) - allowed
    else:
        auc_ok = True
    fid_ok = row["fid"] <= base["fid"] * (1 + cfg.fid_tolerance)
    kid_ok = row["kid"] <= max(base["kid"] * (1 + cfg.fid_tolerance), base["kid"] + cfg.kid_abs_tolerance)
    return bool(auc_ok and fid_ok and kid_ok)


def choose_default(rows: list[dict], cfg: TradeoffConfig) -> dict:
    """Pick the default strength among s > 0 by ``DEFAULT_RULE``; returns {"strength", "rule", "meets_targets"}."""
    base = next(r for r in rows if r["strength"] == 0)
    protected = [r for r in rows if r["strength"] > 0]
    if not protected:
        return {"strength": 0.0, "rule": "no strength > 0 in the sweep", "meets_targets": False}

    def private(r: dict) -> bool:
        return mia_auc(r) <= cfg.target_mia_auc and r["memorization_rate"] < cfg.target_memorization

    kept = [r for r in protected if keeps_utility(r, base, cfg)]
    if kept and any(private(r) for r in kept):
        pick, rule = min((r for r in kept if private(r)), key=lambda r: r["strength"]), "smallest s meeting all"
    elif kept:
        pick = min(kept, key=lambda r: (r["memorization_rate"], mia_auc(r), r["strength"]))
        rule = "lowest memorisation keeping utility (privacy targets missed)"
    else:
        pick, rule = min(protected, key=lambda r: r["strength"]), "smallest s > 0 (none keeps utility)"
    return {
        "strength": pick["strength"],
        "rule": rule,
        "meets_targets": private(pick) and keeps_utility(pick, base, cfg),
        "utility_kept": {r["strength"]: keeps_utility(r, base, cfg) for r in protected},
        "private": {r["strength"]: private(r) for r in protected},
    }


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


def synthetic_only_aucs(syn, syn_labels, real: dict, cfg: TradeoffConfig, classes: list[str]) -> list[dict]:
    """Real-test AUC of ``classifier_seeds`` classifiers trained on the synthetic set alone (seed, seed+1, ...)."""
    import torch

    from busgen.measure.classify import evaluate, train_classifier
    from busgen.measure.metrics import label_indices
    from busgen.model.classifier import ClassifierConfig, to_tensor

    out = []
    for k in range(cfg.classifier_seeds):
        ccfg = ClassifierConfig.small(**{"image_size": syn.shape[-1], **cfg.classifier, "seed": cfg.seed + k})
        model, history = train_classifier(syn, syn_labels, real["val"][0], real["val"][1], ccfg, classes)
        x_te = to_tensor(real["test"][0], ccfg.image_size)
        y_te = torch.from_numpy(label_indices(real["test"][1], classes))
        test = evaluate(model, x_te, y_te, classes, ccfg.positive)
        out.append({"seed": ccfg.seed, "auc": test["val_auc"], "accuracy": test["val_acc"], "epochs": len(history)})
    return out


def measure(
    syn: np.ndarray,
    syn_labels: list[str],
    real: dict,
    encoder,
    cfg: TradeoffConfig,
    classes: list[str],
) -> dict:
    """Utility and privacy numbers of one synthetic set (uint8 (N, H, W)) against the real splits."""
    from busgen.measure.fidelity import fid_equal_n, kid_interval
    from busgen.measure.privacy import audit, dcr
    from busgen.measure.stats import t_interval

    members = real["members"]
    mem = audit.audit_memorization(syn, members[0], encoder)
    seeds = synthetic_only_aucs(syn, syn_labels, real, cfg, classes)
    aucs = [r["auc"] for r in seeds]
    ci = t_interval(aucs) if len(aucs) > 1 else None
    syn_ref = real["reference"].features(syn)
    fid, fid_n = fid_equal_n(real["held_ref"], syn_ref, seed=cfg.seed)
    top = np.argsort(-mem.pixel_sim)[: cfg.nn_pairs]  # the closest pairs (shift- and flip-tolerant pixel cosine)
    return {
        "fid": fid,
        "fid_n": fid_n,
        "kid": kid_interval(real["held_ref"], syn_ref, seed=cfg.seed)["kid"],
        "auc": float(np.mean(aucs)),
        "aucs": aucs,
        "auc_ci": [ci.low, ci.high] if ci else None,
        "auc_sd": ci.sd if ci else float("nan"),
        "classifier_epochs": [r["epochs"] for r in seeds],
        "memorization_rate": float(mem.flagged.mean()),
        "copy_rate": float(mem.is_copy.mean()),
        "pixel_sim_median": float(np.median(mem.pixel_sim)),
        "dcr": dcr.dcr_membership(members[0], real["attack_non_members"], syn, encoder),
        "nn_pairs": [
            {"syn": int(i), "member": int(mem.pixel_nn[i]), "pixel_sim": float(mem.pixel_sim[i])} for i in top
        ],
    }


def read_real(cfg: TradeoffConfig, classes: list[str]) -> dict:
    """Members (the split, or the adapted model's support set), held-out, val and test arrays of ``data_dir``."""
    from busgen.measure.arrays import read_splits
    from busgen.train import provenance

    if cfg.members == "support":
        td = provenance.training_data(cfg.model)
        if not td.adapted:
            raise ValueError(f"error: members=support needs an adapted model (busgen adapt); {cfg.model} is not one")
        members = provenance.read_support(td)
    else:
        members = read_splits(cfg.data_dir, [cfg.member_split], None)
    return {
        "members": members,
        "held": read_splits(cfg.data_dir, cfg.heldout_splits, None),
        "val": read_splits(cfg.data_dir, [cfg.val_split], classes),
        "test": read_splits(cfg.data_dir, [cfg.test_split], classes),
    }


def prepare_real(real: dict, size: int, cfg: TradeoffConfig, log=print) -> tuple[dict, object]:
    """Resize the real splits to the generator's ``size``, train the copy encoder, load the reference encoder."""
    from busgen.measure.privacy.dcr import split_non_members
    from busgen.measure.privacy.encoder import CopyEncoderConfig, disjoint_images, train_copy_encoder
    from busgen.measure.reference import load_reference
    from busgen.train.protect import to_size

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
        data=f"half of the held-out images ({'+'.join(cfg.heldout_splits)}) of {cfg.data_dir}",
    )
    real["reference"] = load_reference()
    real["held_ref"] = real["reference"].features(real["held"][0])
    log(f"[tradeoff] {len(real['members'][0])} members, {len(held)} held-out images, copy encoder trained")
    return real, encoder


def sweep(gen, real: dict, encoder, labels: list[str], domain, cfg: TradeoffConfig, out: Path, log=print) -> tuple:
    """Sample ``labels`` once per strength (same seeds), measure each set; returns (rows, nearest-pair images)."""
    rows, pairs, t_start = [], {}, time.time()
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
            protect_form=cfg.form,
            **kw,
        )
        ips = len(labels) / (time.perf_counter() - t0)
        row = {"strength": alpha, "img_per_s": ips, **measure(syn, labels, real, encoder, cfg, classes=gen.class_names)}
        pairs[alpha] = [(syn[p["syn"]], real["members"][0][p["member"]], p["pixel_sim"]) for p in row["nn_pairs"]]
        rows.append(row)
        out.mkdir(parents=True, exist_ok=True)  # rows so far: a run cut short still leaves what it measured
        (out / "rows.partial.json").write_text(json.dumps(rows, indent=2, default=float))
        log(
            f"[tradeoff] s {alpha:g}: FID {row['fid']:.3f} KID {row['kid']:.4f} AUC {row['auc']:.3f}"
            f"+-{row['auc_sd']:.3f} mem {row['memorization_rate']:.3f} copies {row['copy_rate']:.3f} "
            f"MIA {mia_auc(row):.3f} {ips:.2f} img/s ({time.time() - t_start:.0f} s)"
        )
    return rows, pairs


def finish(rows: list[dict], pairs: dict, cfg: TradeoffConfig, extra: dict, t_start: float) -> dict:
    """Choose the default, write results.json, tradeoff.md, tradeoff.png and nn.png to ``cfg.out``."""
    from busgen.studies.tradeoff.report import nn_grid, write_report

    out = Path(cfg.out)
    results = {
        "config": cfg.model_dump(mode="json"),
        **extra,
        "rule": DEFAULT_RULE,
        "rows": rows,
        "default": choose_default(rows, cfg),
        "seconds": round(time.time() - t_start, 1),
    }
    nn_grid(pairs, out / "nn.png", results["default"]["strength"])
    write_report(results, out)
    d = results["default"]
    results["summary"] = f"{len(rows)} strengths on {cfg.model}: default s {d['strength']:g} ({d['rule']}) -> {out}"
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "rows.partial.json").unlink(missing_ok=True)
    return results


def run_tradeoff(cfg: TradeoffConfig, log=print) -> dict:
    """Sample, measure and report every strength; returns the results (also written to ``out/results.json``)."""
    import torch

    from busgen.model import generator, protect

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    t_start = time.time()
    gen = generator.load(cfg.model, device="cuda" if torch.cuda.is_available() else "cpu")
    # fails early, with the remedy, when there is no classifier or it did not fit its labels (fail closed)
    protect_meta = protect.check_protect_fit(cfg.model, cfg.protect_min_fit)
    classes = list(gen.class_names)
    real, encoder = prepare_real(read_real(cfg, classes), gen.image_size, cfg, log)
    domain = gen.domain_names[0] if len(gen.domain_names) == 1 else None
    members_domain = real["members"][3][0] if real["members"][3] else None
    domain = members_domain if members_domain in gen.domain_names else domain
    labels = sample_plan(list(real["members"][1]), classes, cfg.n, cfg.seed)
    rows, pairs = sweep(gen, real, encoder, labels, domain, cfg, Path(cfg.out), log)
    extra = {
        "generator_model_id": gen.model_id,
        "reference_encoder": real["reference"].identity(),
        "n_members": len(real["members"][0]),
        "protect": {
            k: protect_meta.get(k) for k in ("protect_id", "fit_accuracy", "fitted", "epochs", "n_images", "stopped")
        },
    }
    return finish(rows, pairs, cfg, extra, t_start)
