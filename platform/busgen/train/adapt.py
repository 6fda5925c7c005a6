"""Few-shot adaptation: specialise a pretrained generator to a new task from K labelled images per class.

BUSGen's central claim is that a generator pretrained on a large corpus needs only a
handful of labelled images of a new task (new device, new hospital, new label set)
to produce task-specific training data. The pieces here:

* ``select_support``: a seeded, recorded K-shot support set from the train split, so
  runs are reproducible and evaluation never tests on support images;
* the model surgery (new condition vocabulary, LoRA) is ``busgen.model.lora``, typed
  by an ``AdapterSpec`` that both training and loading rebuild the model from;
* ``adapt``: the Ray Train run (the pretraining loop, given the ``AdapterSpec``) and the
  export: an adapter folder that names its base model, or a full model.

Overfitting guard: a fixed, small step budget with an EMA of the trained weights
(K-shot sets are too small for a meaningful held-out slice at K=5).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from busgen.data import dataset as data
from busgen.data import licences, schema
from busgen.model import boxprior, diffusion, generator, lora, unet
from busgen.train import latents, pretrain, provenance, track

SUPPORT_JSON = provenance.SUPPORT_JSON
SUPPORT_DIR = provenance.SUPPORT_DIR


class AdaptError(ValueError):
    """The adaptation cannot run as asked (too few images, incompatible base model...)."""


class AdaptConfig(BaseModel):
    """Adapt a pretrained generator few-shot to a new task (LoRA or full fine-tune) on Ray Train.

    One few-shot adaptation run.
    """

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="pretrained model directory")
    data_dir: str = Field(description="ingested dataset of the new task; support images come from its train split")
    out: str = Field(description="adapted model directory")
    shots: int = Field(10, description="K labelled images per class")
    classes: list[str] | None = Field(None, description="label set of the new task (default: all labels in the data)")
    method: lora.AdaptMethod = Field(
        "lora", description="lora: low-rank adapters on attention | full: fine-tune every weight"
    )
    lora_rank: int = Field(4, description="rank of each LoRA update")
    lora_alpha: float = Field(4.0, description="LoRA scale numerator (scale = alpha / rank)")
    lora_targets: list[str] = Field(
        list(lora.DEFAULT_LORA_TARGETS), description='add "conv1", "conv2" to adapt resnet convs too'
    )
    lr: float | None = Field(
        None, description="default: 1e-3 for LoRA, 5e-5 for a full fine-tune (low: keep pretrained features)"
    )
    max_steps: int = Field(200, description="fixed small budget: the overfitting guard")
    batch_size: int = Field(8, description="per worker")
    ema_decay: float = Field(0.99, description="EMA of the adapted weights (exported)")
    num_workers: int = Field(1, description="Ray Train workers")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    storage_path: str = Field("~/busgen_runs", description="Ray Train storage (local path or cloud URI)")
    run_name: str | None = Field(None, description="default: adapt-<out folder name>")
    seed: int = Field(0, description="support-set selection, initialisation and noise")
    tracking: bool = Field(
        True, description="MLflow run: params, metrics per log step, the adapter folder (busgen.core.tracking)"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow server or store; None = $MLFLOW_TRACKING_URI, else runs/mlruns (one store for all)"
    )


# ----------------------------------------------------------------------------- support set


def select_support(data_dir: str | Path, shots: int, classes: Sequence[str] | None, seed: int) -> pa.Table:
    """K images per class from the train split, chosen by a seeded RNG over rows sorted by sha256.

    Sorting first makes the choice independent of Parquet file order.

    Raises:
        AdaptError: a class has fewer than ``shots`` training images, or is absent.
    """
    table = data.read_table(data_dir, split="train")
    labels = np.array(table.column(schema.LABEL).to_pylist())
    classes = list(classes) if classes else sorted(set(labels.tolist()))
    if shots < 1:
        raise AdaptError(f"--shots must be >= 1, got {shots}")
    order = np.argsort(np.array(table.column(schema.SHA256).to_pylist()), kind="stable")
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        rows = [int(i) for i in order if labels[i] == c]
        if len(rows) < shots:
            raise AdaptError(
                f"class {c!r} has {len(rows)} training images in {data_dir}, fewer than --shots {shots}: "
                "lower --shots or add data"
            )
        picked += sorted(rng.choice(rows, size=shots, replace=False).tolist())
    return table.take(pa.array(picked, type=pa.int64()))


def write_support(support: pa.Table, out: Path, cfg: AdaptConfig) -> Path:
    """Write the support rows (a Parquet dataset the trainer streams) and the human-readable record."""
    (out / SUPPORT_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(support, out / SUPPORT_DIR / "support.parquet")
    record = {
        "data_dir": str(Path(cfg.data_dir).resolve()),
        "shots": cfg.shots,
        "seed": cfg.seed,
        "classes": sorted(set(support.column(schema.LABEL).to_pylist())),
        "images": [
            {"source": s, "sha256": h, "label": lbl}
            for s, h, lbl in zip(*(support.column(c).to_pylist() for c in (schema.SOURCE, schema.SHA256, schema.LABEL)))
        ],
    }
    (out / SUPPORT_JSON).write_text(json.dumps(record, indent=2))
    return out / SUPPORT_DIR


def support_hashes(adapted_dir: str | Path) -> set[str]:
    """sha256 of every support image of an adapted model: evaluation must exclude these."""
    record = json.loads((Path(adapted_dir) / SUPPORT_JSON).read_text())
    return {r["sha256"] for r in record["images"]}


# ----------------------------------------------------------------------------- run


def check_compatible(base_meta: dict, data_dir: str | Path) -> None:
    """Refuse a base model whose image size or channel layout differs from the new task's data."""
    info = data.dataset_info(data_dir)
    first = data.read_table(data_dir, [schema.IMAGE]).column(schema.IMAGE)[0].as_py()
    shape = data.decode_images([first]).shape[1:]
    size = base_meta["image_size"]
    if shape != (size, size):
        raise AdaptError(
            f"base model generates {size}x{size} images but {data_dir} holds {shape[1]}x{shape[0]} "
            f"(dataset.json size {info.get('image_size')}): re-ingest with --size {size}"
        )
    if base_meta.get("image_channels", 1) != 1:
        raise AdaptError(
            f"base model has {base_meta['image_channels']} image channels; BUS data are single-channel grayscale"
        )


def adapt(cfg: AdaptConfig) -> Path:
    """Select the support set, fine-tune on Ray Train, export the adapted model to ``cfg.out``."""
    from busgen.core.raylocal import init_ray

    try:
        base_meta = generator.read_meta(cfg.base)
    except generator.ModelLoadError as exc:
        raise AdaptError(f"base model {cfg.base}: {exc}") from None
    if base_meta.get("kind") == "adapter":
        raise AdaptError(f"{cfg.base} is itself an adapter: adapt from its base model {base_meta['base_model']}")
    check_compatible(base_meta, cfg.data_dir)
    out = Path(cfg.out)
    support = select_support(cfg.data_dir, cfg.shots, cfg.classes, cfg.seed)
    support_dir = write_support(support, out, cfg)
    spec = lora.AdapterSpec(
        base=str(Path(cfg.base).resolve()),
        method=cfg.method,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_targets=cfg.lora_targets,
        class_names=sorted(set(support.column(schema.LABEL).to_pylist())),
        domain_names=sorted(set(support.column(schema.DOMAIN).to_pylist())),
    )
    loop_cfg = pretrain.PretrainConfig(
        # preset is unused when adapting: the worker rebuilds the base architecture from its folder
        data_dir=str(support_dir),
        image_size=base_meta["image_size"],
        batch_size=min(cfg.batch_size, support.num_rows),
        lr=cfg.lr or (1e-3 if cfg.method == "lora" else 5e-5),
        warmup_steps=min(20, cfg.max_steps // 10),
        max_steps=cfg.max_steps,
        ema_decay=cfg.ema_decay,
        checkpoint_every=cfg.max_steps,
        num_to_keep=1,
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        storage_path=cfg.storage_path,
        run_name=cfg.run_name or default_run_name(cfg),
        out=str(out),
        seed=cfg.seed,
        prediction_type=base_meta["diffusion"].get("prediction_type", "epsilon"),
    )
    init_ray()
    fingerprint = pretrain.read_train_metadata(support_dir)["fingerprint"]
    latent = None
    if base_meta.get("latent"):  # a latent base: the support set is encoded with the base's own autoencoder
        ae_dir = generator.path_inside(Path(cfg.base), base_meta["latent"]["autoencoder"], "latent.autoencoder")
        latent = latents.encode_dataset(support_dir, ae_dir, fingerprint)
        latent["scaling_factor"] = base_meta["latent"]["scaling_factor"]  # the base's scale, not the support set's
        dataset = latents.make_latent_dataset(support_dir, ae_dir, fingerprint)
    else:
        dataset = pretrain.make_train_dataset(support_dir)
    tracking_cfg = cfg.model_copy(update={"run_name": loop_cfg.run_name})
    with track.open_run(
        tracking_cfg, "adapt", params=cfg.model_dump(mode="json") | {"loop": loop_cfg.model_dump(mode="json")}
    ) as run:
        result = pretrain.fit(
            loop_cfg,
            spec.class_names,
            spec.domain_names,
            dataset,
            adapter=spec,
            data_fingerprint=fingerprint,
            tracking=run.ref(),
            latent=latent,
        )
        exported = export_adapted(pretrain.final_state(result, loop_cfg.run_name), cfg, base_meta, spec, support)
        track.finish(run, exported, result.metrics)
    return exported


def default_run_name(cfg: AdaptConfig) -> str:
    """``adapt-<out folder>-<unix time>``: a fresh Ray Train run each time unless ``run_name`` is given."""
    return f"adapt-{Path(cfg.out).name}-{int(time.time())}"


def export_adapted(state: dict, cfg: AdaptConfig, base_meta: dict, spec: lora.AdapterSpec, support: pa.Table) -> Path:
    """Write the adapter folder (LoRA, in peft's format) or a full model folder, both recording base and support set.

    Both record what they trained on (``busgen.train.provenance``): the base model's data
    fingerprint, the support set's fingerprint and its row ids (sha256).
    """
    out = Path(cfg.out)
    if not (out / SUPPORT_DIR).is_dir():  # the folder must carry the rows it records (adapt writes them first)
        write_support(support, out, cfg)
    model = generator.build_adapted_model(spec)
    model.load_state_dict(state["ema"]["shadow"])  # sample with the EMA weights
    prior = boxprior.fit(support.column(schema.BOX).to_pylist(), support.column(schema.LABEL).to_pylist())
    record = {
        "base_model": spec.base,
        "base_model_id": generator.weights_fingerprint(spec.base),
        "shots": cfg.shots,
        "method": cfg.method,
        "support_record": SUPPORT_JSON,
        "train_steps": int(state["step"]),
        **provenance.adapted_record(base_meta, out / SUPPORT_DIR, support.column(schema.SHA256).to_pylist()),
        # the base's training sets and the support set's: the licences both bring (busgen.data.licences)
        "datasets": licences.merge(base_meta.get("datasets") or [], data.dataset_info(cfg.data_dir).get("datasets")),
    }
    if cfg.method == "full":
        model_cfg = unet.ModelConfig(
            **{k: v for k, v in base_meta["model"].items() if k in unet.ModelConfig.model_fields}
        )
        generator.export_model(
            out,
            model,
            None,
            model_cfg,
            spec.class_names,
            spec.domain_names,
            prior,
            base_meta.get("data_fingerprint", ""),
            int(state["step"]),
            {},
            diffusion.DiffusionConfig(**base_meta["diffusion"]),
            # a latent base's autoencoder travels with the full fine-tune (the folder stays self-contained)
            autoencoder_dir=Path(spec.base) / base_meta["latent"]["autoencoder"] if base_meta.get("latent") else None,
            latent_scaling=(base_meta.get("latent") or {}).get("scaling_factor", 1.0),
            datasets=record["datasets"],
        )
        meta = json.loads((out / generator.BUSGEN_JSON).read_text())
        meta.update(record, kind="full")  # data_fingerprint stays the base's (the card names it)
        (out / generator.BUSGEN_JSON).write_text(json.dumps(meta, indent=2))
        return out
    lora.save_adapter(model, out, spec.base)  # peft's adapter_config.json + adapter_model.safetensors
    prior.save(out / generator.BOX_PRIOR_JSON)
    meta = {
        **{k: base_meta[k] for k in ("format_version", "image_size", "model", "diffusion")},
        "kind": "adapter",
        "class_names": spec.class_names,
        "domain_names": spec.domain_names,
        "adapter": spec.model_dump(include={"method", "lora_rank", "lora_alpha", "lora_targets"}),
        "base_model_rel": _relpath(spec.base, out),
        **record,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta["model_id"] = generator.weights_fingerprint(out)
    (out / generator.BUSGEN_JSON).write_text(json.dumps(meta, indent=2))
    return out


def _relpath(target: str | Path, start: Path) -> str:
    import os

    return os.path.relpath(Path(target).resolve(), start.resolve())
