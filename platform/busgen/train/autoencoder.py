"""Autoencoder training on Ray Train: the first stage of a latent generator.

Same pattern as pretraining (``busgen.train.pretrain``): a pure-torch step
(``autoencoder_step``), a worker loop that resumes from the run's latest checkpoint
(same ``run_name`` + ``storage_path``; another dataset or architecture is refused), MLflow
tracking from rank 0 and progress lines with an ETA, then the export of the EMA weights as
an autoencoder folder part (``busgen.model.autoencoder``). The checkpoint, identity,
reporting and tracking helpers are pretraining's own.

The patch discriminator of Rombach et al. is not built: L1 + MS-SSIM + KL only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from busgen.model import autoencoder as ae
from busgen.train import pretrain, track
from busgen.train.batches import augment, decode_batch
from busgen.train.checkpoint import (
    EMA,
    META_FILE,
    check_identity,
    check_local_run,
    make_rngs,
    restore_checkpoint,
    storage_location,
)


class AutoencoderTrainConfig(BaseModel):
    """Train the ultrasound autoencoder of a latent generator (AutoencoderKL, L1 + MS-SSIM + KL) on Ray Train.

    Autoencoder run: data, architecture, loss weights, optimisation, Ray scaling and storage.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description='ingested dataset directory (Parquet); rows with split == "train" are used')
    image_size: int = Field(64, description="px; images of another size are resized")
    factor: int = Field(4, description="spatial downsampling: 4 or 8")
    latent_channels: int = Field(4, ge=1, description="channels of the latent grid")
    width: int = Field(32, ge=8, description="channels of the first level (deeper levels double it, at most 4x)")
    layers_per_block: int = Field(1, ge=1, description="resnets per level")
    msssim_weight: float = Field(0.5, ge=0, description="weight of 1 - MS-SSIM beside the L1 term")
    kl_weight: float = Field(1e-6, ge=0, description="weight of the KL term (per-image sum over latent elements)")
    batch_size: int = Field(16, description="per worker")
    lr: float = Field(5e-4, description="AdamW peak learning rate")
    weight_decay: float = Field(0.0, description="AdamW weight decay")
    warmup_steps: int = Field(50, description="linear warmup, then cosine decay to 0 at max_steps")
    max_steps: int = Field(1000, description="total optimizer steps (a resumed run continues up to this)")
    grad_clip: float = Field(1.0, description="max global grad norm")
    ema_decay: float = Field(0.99, description="EMA of the weights; the export holds the EMA weights")
    hflip_prob: float = Field(0.5, description="horizontal flip")
    jitter: float = Field(0.05, description="max relative contrast / absolute brightness jitter in model range")
    checkpoint_every: int = Field(200, description="steps; the final step is always checkpointed")
    num_to_keep: int = Field(2, description="checkpoints kept in storage")
    num_workers: int = Field(1, description="Ray Train data-parallel workers")
    cpus_per_worker: float = Field(1, description="torch threads per worker follow this")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    max_failures: int = Field(0, description="worker-group restarts from the latest checkpoint")
    storage_path: str = Field("~/busgen_runs", description="Ray Train storage (local path or cloud URI)")
    run_name: str = Field("autoencoder", description="same name + storage_path = resume")
    out: str = Field("models/autoencoder", description="exported autoencoder folder")
    seed: int = Field(0, description="initialisation, data order and noise")
    log_every: int = Field(10, description="steps between log lines on rank 0")
    tracking: bool = Field(True, description="MLflow run: params, metrics per log step, the exported folder")
    tracking_uri: str | None = Field(None, description="MLflow server or store; None = a local file store")

    def architecture(self) -> ae.AutoencoderConfig:
        return ae.AutoencoderConfig(
            image_size=self.image_size,
            factor=self.factor,
            latent_channels=self.latent_channels,
            width=self.width,
            layers_per_block=self.layers_per_block,
        )


def build_components(cfg: AutoencoderTrainConfig, device: torch.device) -> tuple:
    """Autoencoder (same init on every rank), EMA, AdamW and the warmup + cosine LR schedule."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    vae = ae.build_autoencoder(cfg.architecture()).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return vae, EMA(vae, cfg.ema_decay), opt, get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)


def autoencoder_step(net, unwrapped, opt, lr_sched, ema, x: torch.Tensor, cfg, msssim, gen) -> dict:
    """One optimizer step on a batch x (B, 1, H, W) in [-1, 1]; returns the loss and its parts (device tensors).

    ``net`` is the (possibly DDP-wrapped) ``ReconstructionForward`` of ``unwrapped``, the VAE itself.
    """
    opt.zero_grad(set_to_none=True)
    loss, parts = ae.autoencoder_loss(net, x, msssim, cfg.msssim_weight, cfg.kl_weight, gen)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unwrapped.parameters(), cfg.grad_clip)
    opt.step()
    lr_sched.step()
    ema.update(unwrapped)
    return {"loss": loss.detach(), **parts}


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: ``config`` holds ``cfg`` (AutoencoderTrainConfig dict), ``identity`` and ``tracking``."""
    import ray.train
    import ray.train.torch

    cfg = AutoencoderTrainConfig(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()

    # 1. components, then the latest checkpoint of this run (if any)
    vae, ema, opt, lr_sched = build_components(cfg, device)
    gen, np_rng = make_rngs(cfg.seed, rank, device)
    start_step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            meta_fp = Path(d) / META_FILE
            check_identity(json.loads(meta_fp.read_text()) if meta_fp.is_file() else {}, config["identity"],
                           cfg.run_name, ckpt.path)  # fmt: skip
            start_step = restore_checkpoint(Path(d), rank, vae, ema, opt, lr_sched, gen, np_rng)
    net = ray.train.torch.prepare_model(ae.ReconstructionForward(vae))  # DDP when world > 1
    vocab = ({n: i for i, n in enumerate(config["class_names"])}, {n: i for i, n in enumerate(config["domain_names"])})
    msssim = ae.msssim_metric(cfg.image_size).to(device)
    meta = {"cfg": cfg.model_dump(mode="json"), "identity": config["identity"]}
    if rank == 0:
        pretrain.log_line(f"[autoencoder] {world} worker(s): start at step {start_step} of {cfg.max_steps}")

    # 2. steps: epochs over this worker's shard until max_steps
    shard = ray.train.get_dataset_shard("train")
    tracked = track.tracking.attach(config.get("tracking") if rank == 0 else None)
    history: list = []
    step, t_start, t_log, step_log = start_step, time.perf_counter(), time.perf_counter(), start_step
    while step < cfg.max_steps:
        for raw in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True):
            images, _, _, boxes = decode_batch(raw, *vocab, cfg.image_size)
            images, _ = augment(images, boxes, np_rng, cfg.hflip_prob, cfg.jitter)
            x = torch.from_numpy(images[:, None]).to(device)
            parts = autoencoder_step(net, vae, opt, lr_sched, ema, x, cfg, msssim, gen)
            step += 1
            if step % cfg.log_every and step % cfg.checkpoint_every and step != cfg.max_steps:
                continue
            now = time.perf_counter()
            metrics = {k: float(v) for k, v in parts.items()} | {
                "step": step,
                "lr": lr_sched.get_last_lr()[0],
                "images_per_s": cfg.batch_size * world * (step - step_log) / max(now - t_log, 1e-9),
                "start_step": start_step,
            }
            t_log, step_log = now, step
            metrics["loss_history"] = track.remember(history, step, metrics["loss"])
            tracked.log_metrics(metrics, step)
            pretrain.report(metrics, step, cfg, rank, vae, ema, opt, lr_sched, gen, np_rng, meta)
            if rank == 0 and (step % cfg.log_every == 0 or step == cfg.max_steps):
                pretrain.log_line(
                    f"[autoencoder] step {step}/{cfg.max_steps} loss {metrics['loss']:.4f} l1 {metrics['l1']:.4f} "
                    f"ms-ssim {metrics['msssim']:.3f} {metrics['images_per_s']:.1f} img/s "
                    f"{track.eta_text(step, cfg.max_steps, start_step, now - t_start)}"
                )
            if step >= cfg.max_steps:
                break


# ----------------------------------------------------------------------------- driver


def run_identity(cfg: AutoencoderTrainConfig, data_fingerprint: str) -> dict:
    """What a checkpoint's weights belong to: resuming needs the same data and architecture."""
    return {"data_fingerprint": data_fingerprint, "architecture": cfg.architecture().model_dump(mode="json")}


def train_autoencoder(cfg: AutoencoderTrainConfig):
    """Train on Ray Train (resuming a run of the same name), export the EMA weights to ``cfg.out``; returns the Result.

    Raises:
        busgen.model.autoencoder.AutoencoderError: an image size the factor does not divide, or factor not 4/8.
        busgen.train.checkpoint.ResumeMismatchError: the run name holds checkpoints of other data or architecture.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if cfg.factor not in (4, 8):
        raise ae.AutoencoderError(f"error: factor must be 4 or 8, got {cfg.factor}")
    arch = cfg.architecture()
    ae.build_autoencoder(arch)  # refuses a size the factor does not divide, before Ray starts anything
    meta = pretrain.read_train_metadata(cfg.data_dir)
    identity = run_identity(cfg, meta["fingerprint"])
    location = storage_location(cfg.storage_path)
    if "://" not in location:
        check_local_run(Path(location) / cfg.run_name, identity, cfg.run_name)
    with track.open_run(cfg, "autoencoder") as run:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "cfg": cfg.model_dump(mode="json"),
                "class_names": meta["class_names"],
                "domain_names": meta["domain_names"],
                "identity": identity,
                "tracking": run.ref(),
            },
            scaling_config=ScalingConfig(
                num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
            ),
            run_config=RunConfig(
                name=cfg.run_name,
                storage_path=location,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
                failure_config=FailureConfig(max_failures=cfg.max_failures),
            ),
            datasets={"train": pretrain.make_train_dataset(cfg.data_dir)},
        )
        result = trainer.fit()
        if result.error is None:
            state = pretrain.final_state(result, cfg.run_name)
            vae = ae.build_autoencoder(arch)
            vae.load_state_dict(state["ema"]["shadow"])
            metrics = {k: v for k, v in (result.metrics or {}).items() if k in ("loss", "l1", "msssim", "kl")}
            record = {"data_fingerprint": meta["fingerprint"], "train_steps": int(state["step"]), "metrics": metrics}
            ae.save_autoencoder(cfg.out, vae, arch, record)
            track.finish(run, cfg.out, result.metrics)
    return result
