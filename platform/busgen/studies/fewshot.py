"""The few-shot sweep: adapt one base model with K in {5, 10, 20, 50} shots and score the samples per K.

Two scores per K, both against the *target* task's real images that were not in the
support set:

* ``domain_score``: the share of samples a target-vs-reference domain classifier
  (logistic regression on texture statistics and 8x8 thumbnails, trained on real
  images of both) assigns to the target. 1.0 = every sample looks like the new site.
* ``kid`` / ``fid``: unbiased KID and FID (equal n, ``fid_n``) against held-out target
  images, on the frozen reference encoder (`busgen.measure.reference`; its label is in
  every row), so K rows and runs compare.

K = 0 rows score the unadapted base model, the baseline every K must beat.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from busgen.core.storage import write_tables
from busgen.data import dataset as data
from busgen.data import schema
from busgen.model import generator, lora
from busgen.train import adapt
from busgen.train.adapt import AdaptConfig


class FewShotConfig(BaseModel):
    """Adapt with several K and score each K (domain score, FID)."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="pretrained model folder")
    target_dir: str = Field(description="ingested dataset of the new task")
    reference_dir: str = Field(description='ingested dataset the base model was trained on (the "old" domain)')
    out: str = Field(description="folder for adapted models and results")
    shots: list[int] = Field([5, 10, 20, 50], description="K values: labelled images per class")
    method: lora.AdaptMethod = Field("lora", description="lora | full")
    max_steps: int = Field(150, description="adaptation steps per K")
    batch_size: int = Field(16, description="adaptation batch size")
    n_samples: int = Field(60, description="samples scored per K")
    sample_steps: int = Field(20, description="denoising steps of the scored samples")
    target_domain: str | None = Field(
        None, description="domain name to sample with (default: the adapted model's first)"
    )
    storage_path: str = Field("~/busgen_runs", description="Ray Train storage (local path or cloud URI)")
    seed: int = Field(0, description="support selection, training and sampling")


def texture_features(images: np.ndarray) -> np.ndarray:
    """Gain, contrast, speckle grain and an 8x8 thumbnail: cheap, device-sensitive statistics."""
    x = images.astype(np.float32) / 255.0
    n, h, w = x.shape
    grain = [np.abs(np.diff(x, axis=2)).mean((1, 2)), np.abs(np.diff(x, axis=1)).mean((1, 2))]
    thumb = x[:, : h - h % 8, : w - w % 8].reshape(n, 8, h // 8, 8, w // 8).mean((2, 4)).reshape(n, 64)
    return np.concatenate([np.stack([x.mean((1, 2)), x.std((1, 2)), *grain], axis=1), thumb], axis=1)


def fit_domain_classifier(target: np.ndarray, reference: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(texture_features(np.concatenate([target, reference])), [1] * len(target) + [0] * len(reference))
    return clf


def score_samples(samples: np.ndarray, clf, encoder, held_out_feats: np.ndarray) -> dict:
    """Domain score and KID / FID (equal n) against held-out target images, on the reference encoder."""
    from busgen.measure.fidelity import fid_equal_n, kid_interval

    feats = encoder.features(samples)
    fid, n = fid_equal_n(held_out_feats, feats)
    return {
        "domain_score": float(clf.predict(texture_features(samples)).mean()),
        "kid": kid_interval(held_out_feats, feats)["kid"],
        "fid": float(fid),
        "fid_n": n,
        "reference_encoder": encoder.label,
    }


def sample_for(model_dir: Path, class_names: list[str], domain: str | None, cfg: FewShotConfig) -> np.ndarray:
    gen = generator.load(model_dir, device="cpu")
    labels = [class_names[i % len(class_names)] for i in range(cfg.n_samples)]
    labels = [lbl if lbl in gen.class_names else gen.class_names[0] for lbl in labels]
    dom = domain if domain in gen.domain_names else None
    return gen.sample(labels, domains=dom, steps=cfg.sample_steps, seed=cfg.seed)


def run_few_shot(cfg: FewShotConfig) -> list[dict]:
    """Adapt per K, sample, score; writes ``results.json`` and ``results.csv``/``.parquet`` into ``cfg.out``."""
    from busgen.measure.reference import load_reference

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    target, target_labels, _, _ = data.read_arrays(cfg.target_dir, split="train")
    reference, _, _, _ = data.read_arrays(cfg.reference_dir, split="train")
    clf = fit_domain_classifier(target, reference)
    encoder = load_reference()
    classes = sorted(set(target_labels))
    rows = []
    base_samples = sample_for(Path(cfg.base), classes, None, cfg)
    rows.append({"shots": 0, "model": cfg.base, **score_samples(base_samples, clf, encoder, encoder.features(target))})
    for k in cfg.shots:
        t0 = time.time()
        adapted = adapt.adapt(
            AdaptConfig(
                base=cfg.base,
                data_dir=cfg.target_dir,
                out=str(out / f"k{k}"),
                shots=k,
                method=cfg.method,
                max_steps=cfg.max_steps,
                batch_size=cfg.batch_size,
                storage_path=cfg.storage_path,
                seed=cfg.seed,
            )
        )
        support = adapt.support_hashes(adapted)
        held_out = _held_out(cfg.target_dir, support)
        domain = cfg.target_domain or generator.load(adapted, device="cpu").domain_names[0]
        samples = sample_for(adapted, classes, domain, cfg)
        rows.append(
            {
                "shots": k,
                "model": str(adapted),
                "seconds": round(time.time() - t0, 1),
                **score_samples(samples, clf, encoder, encoder.features(held_out)),
            }
        )
        print(f"[few_shot] K={k}: {rows[-1]}", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    write_tables(str(out / "results"), rows)
    return rows


def _held_out(target_dir: str, support: set[str]) -> np.ndarray:
    """Target images (all splits) minus the support set: what adapted samples are compared with."""
    table = data.read_table(target_dir, [schema.IMAGE, schema.SHA256])
    keep = [
        png
        for png, h in zip(table.column(schema.IMAGE).to_pylist(), table.column(schema.SHA256).to_pylist())
        if h not in support
    ]
    return data.decode_images(keep)
