"""Evaluation suites: is the synthetic data useful, faithful, diverse -- and safe to share?

A suite is a YAML spec (``evals/suites/*.yaml``) loaded into ``SuiteConfig`` with
`busgen.core.config.load_config`. ``run_suite`` then, in order:

1. prepares inputs: ingests the real data when only a raw source is given, pretrains
   a generator on the real train split when the model folder does not exist yet, and
   generates a synthetic set with `busgen.generate.shards` when only a model is given
   (all three resume or skip when their output already exists);
2. **utility** -- a Ray Tune grid, one trial per (training mix, seed): real train split
   plus synthetic at each ratio, and synthetic only; tested on the real test split and
   on external datasets (see `busgen.eval.suites`);
3. **fidelity** -- FID/KID/PRDC per class and overall, plus MS-SSIM diversity, on the
   penultimate features of the real-only classifier (an in-domain encoder);
4. **privacy** -- nearest-neighbour memorisation audit, membership inference by
   denoising error (`busgen.eval.privacy.membership`), real-vs-synthetic detector AUC;
5. **sampler_steps** -- a second Tune grid: FID vs sampler and number of steps;
6. writes ``results.parquet``/``results.csv`` (one row per utility trial and test set),
   ``results.json`` (timestamp, run id, params, metrics, every part) and the report
   (`busgen.eval.report`).

Any part can be switched off (``privacy.enabled=false``) and the report still renders.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np

from busgen.eval import metrics, suites
from busgen.eval.suites import SuiteConfig  # the suite spec (evals/suites/*.yaml)

# ----------------------------------------------------------------------------- inputs


def prepare_real(cfg: SuiteConfig) -> str:
    """The real dataset dir, ingesting ``cfg.source`` first when it holds no Parquet yet."""
    from busgen.data.dataset import DatasetError, parquet_files

    try:
        parquet_files(cfg.real_dir)
    except DatasetError:
        if not cfg.source:
            raise
        from busgen.data.ingest import IngestConfig, ingest

        print(f"[evaluate] ingest {cfg.source} -> {cfg.real_dir} at {cfg.image_size} px", flush=True)
        print(
            ingest(cfg.source, cfg.real_dir, IngestConfig(size=cfg.image_size, overwrite=True), progress=False).line()
        )
    return str(Path(cfg.real_dir).resolve())


def prepare_model(cfg: SuiteConfig, real_dir: str, work: Path) -> str | None:
    """The generator dir; pretrained on the real train split when missing and ``pretrain`` is set.

    The Ray Train run is named after the suite, so re-running an interrupted suite resumes it.
    """
    if not cfg.model:
        return None
    model = Path(cfg.model).resolve()
    if (model / "busgen.json").is_file():
        return str(model)
    if cfg.pretrain is None:
        raise FileNotFoundError(f"model {model} not found (no busgen.json) and no `pretrain` section to create it")
    from busgen.data.dataset import dataset_info, read_table
    from busgen.data.imageio import decode_image
    from busgen.train.pretrain import PretrainConfig, pretrain

    first = read_table(real_dir, ["image"]).column("image")[0].as_py()
    size = cfg.pretrain.image_size or dataset_info(real_dir).get("image_size") or decode_image(first).shape[-1]
    p = cfg.pretrain
    pcfg = PretrainConfig(
        data_dir=real_dir,
        preset=p.preset,
        image_size=size,
        batch_size=p.batch_size,
        lr=p.lr,
        warmup_steps=p.warmup_steps,
        max_steps=p.max_steps,
        ema_decay=p.ema_decay,
        num_workers=p.num_workers,
        use_gpu=p.use_gpu,
        checkpoint_every=p.checkpoint_every,
        storage_path=str(work / "ray_runs"),
        run_name=f"{cfg.name}-pretrain",
        out=str(model),
    )
    print(f"[evaluate] pretrain {p.preset} at {size} px for {p.max_steps} steps -> {model}", flush=True)
    pretrain(pcfg)
    return str(model)


def prepare_synthetic(cfg: SuiteConfig, model_dir: str | None, work: Path) -> str | None:
    """The synthetic set dir: the given one, or one generated (resumably) from the model."""
    if cfg.synthetic_dir:
        return str(Path(cfg.synthetic_dir).resolve())
    if model_dir is None:
        return None
    from busgen.generate.shards import GenerateConfig, generate

    g = cfg.generate
    gcfg = GenerateConfig(
        model=model_dir,
        out=str(work / "synthetic"),
        n=g.n,
        class_ratio={c: 1.0 for c in cfg.classes},
        sampler=g.sampler,
        steps=g.steps,
        guidance=g.guidance,
        seed=g.seed,
        shard_size=g.shard_size,
        batch_size=g.batch_size,
        concurrency=g.concurrency,
        num_gpus=g.num_gpus,
    )
    print(f"[evaluate] {generate(gcfg, progress=False).line()}", flush=True)
    return gcfg.out


# ----------------------------------------------------------------------------- parts


def utility_grid(cfg: SuiteConfig) -> list[dict]:
    """One point per (arm, seed): every ratio, then synthetic only."""
    u = cfg.utility
    arms = [{"ratio": float(r), "synthetic_only": False} for r in u.ratios]
    arms += [{"ratio": 0.0, "synthetic_only": True}] if u.synthetic_only else []
    return [{**arm, "seed": s} for arm in arms for s in u.seeds]


def run_utility(cfg: SuiteConfig, real_dir: str, syn_dir: str | None, work: Path) -> dict:
    """Tune grid of utility trials -> rows (one per trial and test set) and the ROC of each arm's first seed."""
    u = cfg.utility
    base = {
        "real_dir": real_dir,
        "synthetic_dir": syn_dir,
        "classes": cfg.classes,
        "positive": cfg.positive,
        "classifier": u.classifier.model_dump(mode="json"),
        "external_test": {k: str(Path(v).resolve()) for k, v in u.external_test.items()},
        "external_split": u.external_split,
        "n_boot": u.n_boot,
        "artifacts_dir": str(work / "utility"),
        "torch_threads": cfg.torch_threads,
    }
    grid = utility_grid(cfg)
    for point in grid:  # fail on the driver, in a second, rather than in every trial
        suites.training_mix(suites.UtilityTrialConfig(**{**base, **point}))
    trials = suites.run_grid(
        suites.utility_trial,
        base,
        grid,
        str(work / "tune"),
        f"{cfg.name}-utility",
        cfg.resources_per_trial,
        cfg.max_concurrent_trials,
    )
    return {
        "rows": utility_rows(trials),
        "trials": trials,
        "roc": first_seed_rocs(trials, min(u.seeds)),
        "deltas": paired_deltas(trials, u.n_boot),
    }


def utility_rows(trials: list[dict]) -> list[dict]:
    """Split each trial's ``<test set>/<metric>`` scalars into one row per test set."""
    rows = []
    for t in trials:
        keys = {
            "arm": suites.arm_name(t["ratio"], t["synthetic_only"]),
            "ratio": t["ratio"],
            "synthetic_only": t["synthetic_only"],
            "seed": t["seed"],
            "status": t["status"],
        }
        names = sorted({k.split("/", 1)[0] for k in t if "/" in k}) or [suites.REAL_TEST]
        for name in names:
            row = {**keys, "test_set": name, "val_auc": t.get("val_auc"), "epochs_run": t.get("epochs_run")}
            row.update({k.split("/", 1)[1]: v for k, v in t.items() if k.startswith(name + "/")})
            rows.append(row)
    return rows


def paired_deltas(trials: list[dict], n_boot: int) -> dict[str, dict[str, dict]]:
    """Test set -> arm -> AUC(arm) - AUC(real only), seed-paired, with a paired bootstrap CI over test cases.

    Arms share their test cases, so the difference has a far tighter CI than either AUC;
    the synthetic-vs-real targets are judged on it. Seeds present in both arms are paired.
    """
    scores: dict[str, dict[str, dict[int, dict]]] = {}  # test set -> arm -> seed -> {"positive", "score"}
    for t in trials:
        if t["status"] != "ok" or not t.get("artifacts"):
            continue
        saved = json.loads((Path(t["artifacts"]) / "reports.json").read_text()).get("scores", {})
        for name, s in saved.items():
            scores.setdefault(name, {}).setdefault(suites.arm_name(t["ratio"], t["synthetic_only"]), {})[t["seed"]] = s
    out: dict[str, dict[str, dict]] = {}
    for name, arms in scores.items():
        base = arms.get("real", {})
        for arm, by_seed in arms.items():
            seeds = sorted(set(base) & set(by_seed))
            if arm == "real" or not seeds:
                continue
            y = np.asarray(base[seeds[0]]["positive"])
            if any(by_seed[s]["positive"] != base[s]["positive"] for s in seeds):  # never after hours of trials
                print(
                    f"[evaluate] warning: arms 'real' and {arm!r} were tested on different cases of {name}; "
                    "no paired difference for this arm",
                    flush=True,
                )
                continue
            out.setdefault(name, {})[arm] = metrics.paired_auc_delta(
                y, [base[s]["score"] for s in seeds], [by_seed[s]["score"] for s in seeds], n_boot=n_boot
            )
    return out


def first_seed_rocs(trials: list[dict], seed: int) -> dict[str, dict]:
    """Arm -> test set -> ROC points, read from the trials' artifacts (first seed only, to keep plots readable)."""
    out: dict[str, dict] = {}
    for t in trials:
        if t["seed"] != seed or not t.get("artifacts"):
            continue
        reports = json.loads((Path(t["artifacts"]) / "reports.json").read_text())["reports"]
        out[suites.arm_name(t["ratio"], t["synthetic_only"])] = {
            name: {**rep["roc"], "auc": rep["auc"]["value"]} for name, rep in reports.items()
        }
    return out


def encoder_dir(cfg: SuiteConfig, real_dir: str, utility: dict | None, work: Path) -> str:
    """The in-domain encoder: the real-only classifier of the utility grid, or one trained here."""
    for t in (utility or {}).get("trials", []):
        if t["ratio"] == 0 and not t["synthetic_only"] and t.get("artifacts"):
            return str(Path(t["artifacts"]) / "classifier")
    base = {
        "real_dir": real_dir,
        "classes": cfg.classes,
        "positive": cfg.positive,
        "seed": min(cfg.utility.seeds),
        "classifier": cfg.utility.classifier.model_dump(mode="json"),
        "n_boot": 10,
        "artifacts_dir": str(work / "encoder"),
        "torch_threads": cfg.torch_threads,
    }
    result = suites.utility_trial(base)
    return str(Path(result["artifacts"]) / "classifier")


def _read(path: str, splits: list[str] | None, classes: list[str] | None):
    """Images, labels, boxes, domains of several splits (None = all rows) as arrays/lists."""
    from busgen.data.dataset import read_arrays

    parts = [read_arrays(path, split=s, classes=classes) for s in (splits or [None])]
    images = (
        np.concatenate([p[0] for p in parts if len(p[0])])
        if any(len(p[0]) for p in parts)
        else np.zeros((0, 1, 1), np.uint8)
    )
    return images, *([v for p in parts for v in p[k]] for k in (1, 2, 3))


def run_fidelity(cfg: SuiteConfig, real_dir: str, syn_dir: str, enc_dir: str, out: Path) -> dict:
    """FID/KID/PRDC/MS-SSIM of synthetic vs held-out real, a real-vs-real floor, detector AUC and sample arrays."""
    from busgen.eval import fidelity
    from busgen.eval.privacy import audit as privacy
    from busgen.model import classifier

    enc, _, _ = classifier.load_classifier(enc_dir)
    real, real_labels, _, _ = _read(real_dir, cfg.fidelity.real_splits, cfg.classes)
    train, train_labels, _, _ = _read(real_dir, ["train"], cfg.classes)
    syn, syn_labels, _, _ = _read(syn_dir, None, cfg.classes)
    f_real, f_train, f_syn = (classifier.embed(enc, x) for x in (real, train, syn))
    kid_size = min(1000, len(f_real), len(f_syn))
    report = fidelity.fidelity_report(f_real, f_syn, real_labels, syn_labels, cfg.fidelity.k, real, syn, kid_size)
    floor = fidelity.fidelity_report(
        f_real, f_train, real_labels, train_labels, cfg.fidelity.k, kid_subset_size=min(kid_size, len(f_train))
    )
    report["real_vs_real"] = floor["overall"]  # what FID looks like between two real sets with this encoder
    report["detector"] = privacy.detector_auc(f_real, f_syn)
    np.savez_compressed(out / "samples.npz", **_sample_arrays(real, real_labels, syn, syn_labels, cfg.classes))
    np.savez_compressed(out / "work" / "real_features.npz", features=f_real)
    return report


def _sample_arrays(real, real_labels, syn, syn_labels, classes, per_class: int = 8) -> dict[str, np.ndarray]:
    """First ``per_class`` real and synthetic images of each class, for the report's sample grid."""
    out = {}
    for c in classes:
        out[f"R: {c}"] = real[np.asarray(real_labels) == c][:per_class]
        out[f"S: {c}"] = syn[np.asarray(syn_labels) == c][:per_class]
    return out


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, k), replace=False))


def run_privacy(cfg: SuiteConfig, real_dir: str, syn_dir: str, model_dir: str | None, out: Path) -> dict:
    """Memorisation audit (+ nearest-pair PNG) against the generator's training images; membership inference."""
    from busgen.data.dataset import read_table
    from busgen.eval.privacy import audit as privacy
    from busgen.eval.privacy import encoder as encoders

    p = cfg.privacy
    member_dir = str(Path(p.member_dir).resolve()) if p.member_dir else real_dir
    members, m_labels, m_boxes, m_domains = _read(member_dir, [p.member_split] if p.member_split else None, None)
    syn, _, _, _ = _read(syn_dir, None, cfg.classes)
    table = read_table(syn_dir, ["index"], classes=cfg.classes)  # same files, order and filter as `syn`
    ids = np.asarray(table.column("index").to_pylist() if "index" in table.column_names else range(len(syn)))
    enc = encoders.train_copy_encoder(
        members, epochs=p.encoder_epochs, cfg=encoders.CopyEncoderConfig(image_size=members.shape[-1])
    )
    audit = privacy.audit_memorization(syn, members, enc, syn_ids=ids)
    pairs = audit.closest_pairs(p.closest_pairs)
    privacy.save_closest_pairs_png(out / "nn_pairs.png", syn, members, pairs, p.closest_pairs)
    result = {
        "memorization": audit.summary(),
        "closest_pairs": [[int(i), int(j), float(s)] for i, j, s in pairs],
        "flagged_ids": [int(i) for i in audit.ids[audit.flagged]],
    }
    if model_dir:
        result["membership"] = run_membership(cfg, model_dir, (members, m_labels, m_boxes, m_domains), real_dir)
    return result


def run_membership(cfg: SuiteConfig, model_dir: str, members: tuple, real_dir: str) -> dict:
    """Denoising-error attack: ``n_membership`` training images vs as many held-out real images."""
    import torch

    from busgen.eval.privacy import membership
    from busgen.model import generator

    p = cfg.privacy
    gen = generator.load(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    held = _read(real_dir, p.heldout_splits, gen.class_names)
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
    return membership.membership_report(gen, sets[0], sets[1], timesteps=p.timesteps)


def run_sampler_steps(cfg: SuiteConfig, real_dir: str, model_dir: str, enc_dir: str, work: Path) -> list[dict]:
    """Tune grid over (sampler, steps): FID of each setting against the held-out real features."""
    from busgen.model import classifier

    s = cfg.sampler_steps
    real_fp = work / "real_features.npz"
    if not real_fp.is_file():  # fidelity part off: embed the reference images here
        enc, _, _ = classifier.load_classifier(enc_dir)
        np.savez_compressed(
            real_fp, features=classifier.embed(enc, _read(real_dir, cfg.fidelity.real_splits, cfg.classes)[0])
        )
    base = {
        "model": model_dir,
        "guidance": s.guidance,
        "classes": cfg.classes,
        "n_per_class": s.n_per_class,
        "encoder_dir": enc_dir,
        "real_features": str(real_fp),
        "batch_size": s.batch_size,
        "torch_threads": cfg.torch_threads,
    }
    grid = [{"sampler": a, "steps": int(k)} for a in s.samplers for k in s.steps]
    return suites.run_grid(
        suites.sampler_trial,
        base,
        grid,
        str(work / "tune"),
        f"{cfg.name}-sampler-steps",
        cfg.resources_per_trial,
        cfg.max_concurrent_trials,
    )


# ----------------------------------------------------------------------------- run


def run_suite(cfg: SuiteConfig, run_id: str | None = None) -> dict:
    """Run every enabled part of the suite and write the report folder; returns the results record."""
    import torch

    from busgen.core.raylocal import init_ray
    from busgen.eval import report as evalreport

    cfg = cfg.shrunk() if cfg.dry_run else cfg
    torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        start = time.time()
        value = fn(*args)
        timings[stage] = round(time.time() - start, 1)
        return value

    timed("ray", init_ray)
    # 1. inputs
    real_dir = timed("ingest", prepare_real, cfg)
    model_dir = timed("pretrain", prepare_model, cfg, real_dir, work)
    syn_dir = timed("generate", prepare_synthetic, cfg, model_dir, work)
    record = {
        "suite": cfg.name,
        "run_id": run_id or f"local-{uuid.uuid4().hex[:12]}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": cfg.model_dump(mode="json"),
        "inputs": {"real_dir": real_dir, "model": model_dir, "synthetic_dir": syn_dir},
        "timings": timings,
    }
    # 2. parts
    if cfg.utility.enabled:
        record["utility"] = timed("utility", run_utility, cfg, real_dir, syn_dir, work)
    needs_encoder = bool((syn_dir and cfg.fidelity.enabled) or (model_dir and cfg.sampler_steps.enabled))
    enc = timed("encoder", encoder_dir, cfg, real_dir, record.get("utility"), work) if needs_encoder else None
    if syn_dir and cfg.fidelity.enabled:
        record["fidelity"] = timed("fidelity", run_fidelity, cfg, real_dir, syn_dir, enc, out)
    if syn_dir and cfg.privacy.enabled:
        record["privacy"] = timed("privacy", run_privacy, cfg, real_dir, syn_dir, model_dir, out)
    if model_dir and cfg.sampler_steps.enabled:
        record["sampler_steps"] = {
            "rows": timed("sampler_steps", run_sampler_steps, cfg, real_dir, model_dir, enc, work)
        }
    # 3. outputs
    record["metrics"] = evalreport.headline_metrics(record)
    record["seconds"] = round(time.time() - t0, 1)
    evalreport.write_results(out, record)
    evalreport.write_report(out, record)
    return record


def share_filter_dir(
    syn_dir: str | Path,
    real_dir: str | Path,
    out_dir: str | Path,
    split: str | None = "train",
    encoder_epochs: int = 30,
    seed: int = 0,
) -> dict:
    """Audit a synthetic set against the generator's real training images and write a filtered copy.

    Composes `busgen.eval.privacy.audit.audit_memorization` and `busgen.eval.privacy.audit.share_filter`: the
    copy holds every row that is neither a pixel copy nor a memorised near-copy, plus
    ``audit.json`` recording the audit summary and the removed ``index`` values.
    """
    from busgen.data.dataset import read_table
    from busgen.eval.privacy import audit as privacy
    from busgen.eval.privacy import encoder as encoders

    real, _, _, _ = _read(str(real_dir), [split] if split else None, None)
    table = read_table(syn_dir, ["image", "index"])
    syn = np.stack([_decode(b) for b in table.column("image").to_pylist()])
    ids = table.column("index").to_pylist() if "index" in table.column_names else list(range(table.num_rows))
    enc = encoders.train_copy_encoder(
        real, epochs=encoder_epochs, seed=seed, cfg=encoders.CopyEncoderConfig(image_size=real.shape[-1])
    )
    audit = privacy.audit_memorization(syn, real, enc, syn_ids=ids)
    return privacy.share_filter(syn_dir, out_dir, audit)


def _decode(png: bytes) -> np.ndarray:
    from busgen.data.imageio import decode_image

    return decode_image(png)
