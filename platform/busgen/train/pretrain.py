"""Generator pretraining on Ray Train: data-parallel DDP workers, checkpoints, resume, export.

``train_loop_per_worker`` runs inside every Ray Train worker (importable, so tests,
sweeps and adaptation reuse it); ``pretrain`` wires Ray objects around it and exports
the final model. Resume (Ray Train V2): build a new trainer with the same
``RunConfig(name, storage_path)``; ``ray.train.get_checkpoint()`` then returns the latest
checkpoint and the loop continues from its step with weights, EMA, optimizer, LR
schedule and per-rank RNG states restored. A run of the same name that trained other
data or another model is refused (``checkpoint.ResumeMismatchError``), on the driver
before any worker starts (local storage) and again in the worker (any storage).
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from busgen.data import dataset as data
from busgen.data import schema
from busgen.model import autoencoder, boxprior, diffusion, generator, lora, unet
from busgen.model.accel import AccelConfig, Switch
from busgen.train import latents, track
from busgen.train.batches import augment, decode_batch, prepare_batch  # noqa: F401 -- re-exported
from busgen.train.checkpoint import (
    META_FILE,
    STATE_FILE,
    ResumeMismatchError,
    check_identity,
    check_local_run,
    load_torch_file,
    make_rngs,
    restore_checkpoint,
    save_checkpoint,
    storage_location,
    weights_digest,
    worker_mismatch,
)
from busgen.train.console import log_line
from busgen.train.step import build_components, resolve_training, train_step  # noqa: F401 -- re-exported

TRAIN_COLUMNS = [schema.IMAGE, schema.BOX, schema.LABEL, schema.DOMAIN]


class PretrainConfig(BaseModel):
    """Pretrain the diffusion generator on Ray Train (resumes a run of the same run_name) and export it.

    Pretraining run: data, architecture, optimisation, Ray scaling and storage.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description='ingested dataset directory (Parquet); rows with split == "train" are used')
    preset: unet.PresetName = Field("tiny", description="tiny (32-64 px, CPU) | base (128 px) | large (256 px)")
    image_size: int | None = Field(
        None, description="px; None = the preset's size. Images of another size are resized."
    )
    batch_size: int = Field(16, description="per worker; global batch = batch_size * num_workers")
    lr: float = Field(2e-4, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, description="AdamW weight decay")
    warmup_steps: int = Field(100, description="linear warmup, then cosine decay to 0 at max_steps")
    max_steps: int = Field(1000, description="total optimizer steps (a resumed run continues up to this)")
    grad_clip: float = Field(1.0, description="max global grad norm")
    ema_decay: float = Field(0.999, description="EMA of weights used for sampling")
    cond_drop_prob: float = Field(0.1, description="per-condition dropout for classifier-free guidance")
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "epsilon", description="what the UNet predicts: the noise (epsilon) or v"
    )
    hflip_prob: float = Field(
        0.5, description="horizontal flip (box flipped too); ultrasound has no left/right semantics"
    )
    jitter: float = Field(0.05, description="max relative contrast / absolute brightness jitter in model range")
    checkpoint_every: int = Field(200, description="steps; the final step is always checkpointed")
    num_to_keep: int = Field(2, description="checkpoints kept in storage")
    num_workers: int = Field(1, description="Ray Train data-parallel workers")
    cpus_per_worker: float = Field(1, description="torch threads per worker follow this")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    max_failures: int = Field(0, description="worker-group restarts from the latest checkpoint")
    storage_path: str = Field("~/busgen_runs", description="Ray Train storage (local path or cloud URI)")
    run_name: str = Field("pretrain", description="same name + storage_path = resume")
    out: str = Field("models/pretrain", description="exported model directory")
    seed: int = Field(0, description="initialisation, data order and noise")
    log_every: int = Field(
        10, description="steps between log lines on rank 0 (the only steps that read the loss: a host sync)"
    )
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches of batch_size per optimizer step")
    # speed switches: auto = bf16 autocast (fp32 master weights) + channels_last + torch.compile on CUDA, off on CPU
    accel: AccelConfig = Field(
        AccelConfig(), description="speed switches (bf16 autocast, channels_last, torch.compile, fused AdamW)"
    )
    fused_adamw: Switch = Field("auto", description="one-kernel AdamW; auto = on CUDA")
    tracking: bool = Field(
        True, description="MLflow run: params, metrics per log step, the exported model folder (busgen.core.tracking)"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow server or store; None = $MLFLOW_TRACKING_URI, else runs/mlruns (one store for all)"
    )
    autoencoder: str | None = Field(
        None, description="autoencoder folder (busgen autoencoder): train a latent generator on its latents"
    )
    latent_cache: str | None = Field(
        None, description="folder of latent caches; None = <data_dir>/_latents (see busgen.train.latents)"
    )


# ----------------------------------------------------------------------------- data


def read_train_metadata(data_dir: str | Path) -> dict:
    """Small columns of the train split, read in-process: class/domain vocabularies, boxes, fingerprint."""
    files = data.parquet_files(data_dir)
    table = data.read_table(data_dir, columns=[schema.LABEL, schema.DOMAIN, schema.BOX, schema.SHA256], split="train")
    if table.num_rows == 0:
        raise ValueError(f"no rows with split == 'train' in {data_dir}")
    labels = [str(x) for x in table.column(schema.LABEL).to_pylist()]
    h = hashlib.sha256()
    for fp in files:
        h.update(f"{Path(fp).name}:{Path(fp).stat().st_size};".encode())
    if schema.SHA256 in table.column_names:
        h.update("".join(sorted(map(str, table.column(schema.SHA256).to_pylist()))).encode())
    return {
        "class_names": sorted(set(labels)),
        "domain_names": sorted({str(x) for x in table.column(schema.DOMAIN).to_pylist()}),
        "labels": labels,
        "boxes": table.column(schema.BOX).to_pylist(),
        "num_rows": table.num_rows,
        "fingerprint": h.hexdigest()[:16],
    }


CACHE_BELOW_MB = 256  # train splits smaller than this (on disk) are materialised once in the object store


def make_train_dataset(data_dir: str | Path):
    """Ray Dataset of the train split with only the columns training needs.

    Small splits are materialised: otherwise every epoch re-runs the Parquet read and
    filter, and on a few hundred images that start-up cost dominates the step time.
    Large corpora stream from Parquet every epoch (no full copy in memory).
    """
    ds = data.load(data_dir, split="train").select_columns(TRAIN_COLUMNS)
    size_mb = sum(Path(f).stat().st_size for f in data.parquet_files(data_dir)) / 2**20
    return ds.materialize() if size_mb < CACHE_BELOW_MB else ds


# ----------------------------------------------------------------------------- worker loop


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: ``config`` holds ``cfg`` (PretrainConfig dict), ``class_names``, ``domain_names``
    and ``adapter`` (an ``AdapterSpec`` dict when adapting a pretrained model, else None)."""
    import ray.train
    import ray.train.torch

    cfg = PretrainConfig(**config["cfg"])
    class_names, domain_names = config["class_names"], config["domain_names"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()

    # 1. components, then restore from the latest checkpoint of this run (if any)
    adapter = lora.AdapterSpec(**config["adapter"]) if config.get("adapter") else None
    switches = resolve_training(cfg, device)
    model, ema, opt, lr_sched = build_components(cfg, len(class_names), len(domain_names), device, adapter)
    gen, np_rng = make_rngs(cfg.seed, rank, device)
    latent = config.get("latent")  # latent generators train on cached latents (busgen.train.latents)
    prepare = functools.partial(latents.prepare_latent_batch, latent=latent) if latent else prepare_batch
    start_step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            meta_fp = Path(d) / META_FILE
            stored = json.loads(meta_fp.read_text()) if meta_fp.is_file() else {}
            check_identity(stored, config["identity"], cfg.run_name, ckpt.path)
            start_step = restore_checkpoint(Path(d), rank, model, ema, opt, lr_sched, gen, np_rng)
    start_digest = weights_digest(model.state_dict())
    unwrapped = model
    # DDP when world > 1: gradients live in the all-reduce buckets (no copy); a static graph when no micro-batching
    ddp_kwargs = {"gradient_as_bucket_view": True, "static_graph": cfg.grad_accum_steps == 1}
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)
    if switches.compile:
        model = torch.compile(model)  # the DDP wrapper is compiled: dynamo splits graphs at bucket boundaries
    noise_scheduler = diffusion.make_noise_scheduler(diffusion.DiffusionConfig(prediction_type=cfg.prediction_type))
    size = unwrapped.config.image_size
    vocab = ({n: i for i, n in enumerate(class_names)}, {n: i for i, n in enumerate(domain_names)})
    meta = {
        "class_names": class_names,
        "domain_names": domain_names,
        "cfg": cfg.model_dump(mode="json"),
        "identity": config["identity"],
    }
    if rank == 0:
        log_line(
            f"[pretrain] {world} worker(s): start at step {start_step} of {cfg.max_steps} (weights {start_digest}); "
            f"{switches.describe()}"
        )

    # 2. steps: epochs over this worker's shard until max_steps; grad_accum_steps batches per step
    shard = ray.train.get_dataset_shard("train")
    tracked = track.tracking.attach(config.get("tracking") if rank == 0 else None)  # MLflow from rank 0 only
    history: list = []  # (step, loss_avg) since this (re)start: the loss curve of the export
    t_start = time.perf_counter()
    step, epoch, loss_avg, micro = start_step, 0, None, []
    per_step = cfg.batch_size * cfg.grad_accum_steps * world  # images per optimizer step, all workers
    t_first = None  # end of the first step: throughput excludes warm-up (allocations, first batch)
    t_log, step_log = time.perf_counter(), start_step
    while step < cfg.max_steps:
        n_batches = 0
        for raw in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True):
            n_batches += 1
            micro.append(prepare(raw, cfg, vocab, size, np_rng))
            if len(micro) < cfg.grad_accum_steps:
                continue
            loss = train_step(model, unwrapped, noise_scheduler, opt, lr_sched, ema, micro, cfg, gen, device, switches)
            micro = []
            step += 1
            loss_avg = loss if loss_avg is None else 0.9 * loss_avg + 0.1 * loss  # device tensors: no sync
            first = t_first is None
            due = step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or step == cfg.max_steps
            if not (due or first):
                if step >= cfg.max_steps:
                    break
                continue
            loss_f, loss_avg_f = float(loss), float(loss_avg)  # the host waits for the device here, and only here
            now = time.perf_counter()
            t_first = t_first or now
            done = step - start_step - 1
            metrics = {
                "step": step,
                "epoch": epoch,
                "loss": loss_f,
                "loss_avg": loss_avg_f,
                "lr": lr_sched.get_last_lr()[0],
                "images_per_s": per_step * (step - step_log) / max(now - t_log, 1e-9),
                "images_per_s_run": per_step * done / (now - t_first) if done else 0.0,
                "start_step": start_step,
                "start_weights": start_digest,
            }
            t_log, step_log = now, step
            metrics["loss_history"] = track.remember(history, step, loss_avg_f)
            tracked.log_metrics(metrics, step)
            report(metrics, step, cfg, rank, unwrapped, ema, opt, lr_sched, gen, np_rng, meta)
            if rank == 0 and (step % cfg.log_every == 0 or step == cfg.max_steps):
                log_line(
                    f"[pretrain] step {step}/{cfg.max_steps} loss {loss_avg_f:.4f} lr {metrics['lr']:.2e} "
                    f"{metrics['images_per_s']:.1f} img/s "
                    f"{track.eta_text(step, cfg.max_steps, start_step, time.perf_counter() - t_start)}"
                )
            if step >= cfg.max_steps:
                break
        if n_batches == 0:
            raise RuntimeError(
                f"worker {rank} got no full batch: train split too small for "
                f"batch_size={cfg.batch_size} x {world} workers"
            )
        epoch += 1


def report(
    metrics: dict, step: int, cfg: PretrainConfig, rank: int, unwrapped, ema, opt, lr_sched, gen, np_rng, meta
) -> None:
    """Report metrics every ``log_every`` steps; attach a checkpoint every ``checkpoint_every`` steps and at the end.

    Not every step: in Ray Train V2 ``report`` blocks until the controller drains its
    queue, which throttled a tiny CPU model to ~0.5 steps/s when called per step.
    """
    import ray.train

    if step % cfg.checkpoint_every and step != cfg.max_steps:
        if step % cfg.log_every == 0:
            ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp), rank, unwrapped, ema, opt, lr_sched, step, gen, np_rng, meta)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ----------------------------------------------------------------------------- driver


def run_identity(
    cfg: PretrainConfig,
    class_names: list[str],
    domain_names: list[str],
    data_fingerprint: str,
    adapter: lora.AdapterSpec | None = None,
) -> dict:
    """What a checkpoint's weights belong to: resuming is only allowed when all of it matches."""
    # a latent run on other autoencoder weights is another run
    latent = {"autoencoder": autoencoder.read_info(cfg.autoencoder)[1]["autoencoder_id"]} if cfg.autoencoder else {}
    return latent | {
        "data_fingerprint": data_fingerprint,
        "preset": None if adapter else cfg.preset,  # unused when adapting: the base folder fixes the architecture
        "image_size": cfg.image_size if adapter else unet.model_config_for(cfg.preset, cfg.image_size).image_size,
        "class_names": list(class_names),
        "domain_names": list(domain_names),
        "prediction_type": cfg.prediction_type,
        "adapter": adapter.model_dump(mode="json") if adapter else None,
    }


def check_resume(cfg: PretrainConfig, identity: dict) -> None:
    """Refuse, before any worker starts, to resume a local run folder that trained other data or another model."""
    location = storage_location(cfg.storage_path)
    if "://" not in location:  # remote storage: the worker checks the checkpoint it is given
        check_local_run(Path(location) / cfg.run_name, identity, cfg.run_name)


def fit(
    cfg: PretrainConfig,
    class_names: list[str],
    domain_names: list[str],
    dataset,
    adapter: lora.AdapterSpec | None = None,
    *,
    data_fingerprint: str,
    tracking: dict | None = None,
    latent: dict | None = None,
):
    """Run ``train_loop_per_worker`` on Ray Train (resuming a run of the same name); returns the Result.

    Raises:
        ResumeMismatchError: the run name already holds checkpoints of other data or another model.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    identity = run_identity(cfg, class_names, domain_names, data_fingerprint, adapter)
    check_resume(cfg, identity)
    loop_config = {
        "cfg": cfg.model_dump(mode="json"),
        "class_names": class_names,
        "domain_names": domain_names,
        "adapter": adapter.model_dump(mode="json") if adapter else None,
        "identity": identity,
        "tracking": tracking,  # tracking.Run.ref() of the driver's MLflow run; rank 0 logs into it
        "latent": latent,  # latent cache record (shape, scaling factor) of a latent generator, else None
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=storage_location(cfg.storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets={"train": dataset},
    )
    try:
        return trainer.fit()
    except Exception as exc:  # noqa: BLE001 -- a worker's refusal arrives wrapped in Ray's error types
        mismatch = worker_mismatch(exc)
        if mismatch is None:
            raise
        raise ResumeMismatchError(mismatch) from None


def final_state(result, run_name: str) -> dict:
    """Rank 0's saved state (model, EMA, optimizer, step) from the run's latest checkpoint (tensors only)."""
    if result.checkpoint is None:
        raise RuntimeError(f"run {run_name!r} finished without a checkpoint: nothing to export")
    with result.checkpoint.as_directory() as d:
        return load_torch_file(Path(d) / STATE_FILE)


def pretrain(cfg: PretrainConfig):
    """Train on Ray Train (resuming a run of the same name), then export the model to ``cfg.out``.

    Returns:
        the ``ray.train.Result`` of the fit; the exported directory is ``cfg.out``.
    """
    meta = read_train_metadata(cfg.data_dir)
    identity = run_identity(cfg, meta["class_names"], meta["domain_names"], meta["fingerprint"])
    check_resume(cfg, identity)  # before the dataset is materialised
    latent = None
    if cfg.autoencoder:  # latent generator: encode the train split once (cached), train on latents
        latents.model_config_of(cfg)  # refuses a size or preset the autoencoder does not fit, before any work
        latent = latents.encode_dataset(cfg.data_dir, cfg.autoencoder, meta["fingerprint"], cfg.latent_cache)
        dataset = latents.make_latent_dataset(cfg.data_dir, cfg.autoencoder, meta["fingerprint"], cfg.latent_cache)
    else:
        dataset = make_train_dataset(cfg.data_dir)
    with track.open_run(cfg, "pretrain") as run:
        result = fit(
            cfg,
            meta["class_names"],
            meta["domain_names"],
            dataset,
            data_fingerprint=meta["fingerprint"],
            tracking=run.ref(),
            latent=latent,
        )
        export_from_checkpoint(result, cfg, meta, latent)
        track.finish(run, cfg.out, result.metrics)
    return result


def export_from_checkpoint(result, cfg: PretrainConfig, meta: dict, latent: dict | None = None) -> Path:
    """Rebuild the model from the run's latest checkpoint and write the self-contained model dir.

    A latent generator's folder gets a copy of its autoencoder and the latents' scaling factor.
    """
    model_cfg = latents.model_config_of(cfg)
    state = final_state(result, cfg.run_name)
    model = unet.build_model(model_cfg, len(meta["class_names"]), len(meta["domain_names"]))
    model.load_state_dict(state["model"])
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    return generator.export_model(
        cfg.out,
        model,
        state["ema"]["shadow"],
        model_cfg,
        meta["class_names"],
        meta["domain_names"],
        boxprior.fit(meta["boxes"], meta["labels"]),
        meta["fingerprint"],
        state["step"],
        metrics,
        diffusion.DiffusionConfig(prediction_type=cfg.prediction_type, clip_sample=latent is None),
        autoencoder_dir=cfg.autoencoder if latent else None,
        latent_scaling=latent["scaling_factor"] if latent else 1.0,
        datasets=data.dataset_info(cfg.data_dir).get("datasets") or [],
        training=training_settings(cfg, meta["num_rows"]),
    )


def training_settings(cfg: PretrainConfig, train_rows: int) -> dict:
    """What the model card states of how the model was trained (the full config is in the MLflow run)."""
    keys = "preset image_size batch_size lr warmup_steps max_steps ema_decay cond_drop_prob prediction_type"
    keys = (*keys.split(), "num_workers", "use_gpu", "seed")
    return {k: getattr(cfg, k) for k in keys} | {"train_images": int(train_rows), "precision": cfg.accel.precision}
