"""One optimizer step, built for accelerators: what runs between two batches and nothing more.

Why it looks the way it does (each point was measured to matter on an H100):

* **No host sync per step.** ``train_step`` returns the loss as a device tensor; the loop
  reads it (``float``) only at log and checkpoint steps. Noise, timesteps and condition
  dropout are drawn from a per-rank generator *on the device* (``checkpoint.make_rngs``),
  so a step issues no host work and no host-to-device copy besides the batch itself
  (pinned, non-blocking).
* **bf16 autocast with fp32 master weights** (``accel`` precision ``auto`` = bf16 on CUDA,
  fp32 on CPU), **channels_last** convolutions, **fused AdamW** and a foreach EMA.
* **Gradient accumulation**: ``grad_accum_steps`` micro-batches per optimizer step; DDP
  all-reduces only on the last one (``no_sync``).
* **torch.compile** of the (DDP-wrapped) model when ``accel.compile`` resolves on.

``build_components`` gives the same initial weights on every rank (seeded), so DDP
starts in agreement without a broadcast.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from busgen.model import accel, diffusion, generator, lora, unet
from busgen.train import latents
from busgen.train.checkpoint import EMA


def resolve_training(cfg, device: torch.device) -> accel.Resolved:
    """The accelerator switches a training run uses on ``device``.

    Raises:
        accel.AccelError: fp16 (needs a loss scaler; use bf16) or CUDA graphs (a sampling switch).
    """
    r = accel.resolve(cfg.accel, device)
    if r.dtype == torch.float16:
        raise accel.AccelError("error: fp16 training needs a loss scaler busgen does not run: use precision=bf16")
    if r.cuda_graphs:
        raise accel.AccelError("error: cuda_graphs is a sampling switch: set accel.cuda_graphs=false for training")
    return r


def use_fused_adamw(cfg, device: torch.device) -> bool:
    """Fused AdamW (one kernel for all parameters): ``auto`` = on CUDA."""
    return device.type == "cuda" if cfg.fused_adamw == "auto" else cfg.fused_adamw == "on"


def build_components(
    cfg,
    num_labels: int,
    num_domains: int,
    device: torch.device,
    adapter: lora.AdapterSpec | None = None,
) -> tuple:
    """Model (same init on every rank; the base + ``adapter`` surgery when adapting), EMA, AdamW, LR schedule.

    ``cfg`` is a ``pretrain.PretrainConfig``. The model is moved to ``device`` and, when
    the run's switches say so, to channels_last before the optimizer sees its parameters.
    """
    from diffusers.optimization import get_cosine_schedule_with_warmup

    r = resolve_training(cfg, device)
    torch.manual_seed(cfg.seed)
    if adapter is not None:
        model = generator.build_adapted_model(adapter).to(device)
    else:
        model = unet.build_model(latents.model_config_of(cfg), num_labels, num_domains).to(device)
    if r.channels_last:
        model = model.to(memory_format=torch.channels_last)
    unet.maybe_enable_xformers(model)
    ema = EMA(model, cfg.ema_decay)
    # LoRA adaptation freezes the base weights: only what still requires grad is optimised
    params = [p for p in model.parameters() if p.requires_grad]
    fused = use_fused_adamw(cfg, device)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True if fused else None)
    lr_sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)
    return model, ema, opt, lr_sched


def to_device(batch: tuple, device: torch.device, channels_last: bool) -> tuple:
    """CPU batch tensors -> device: pinned + non-blocking on CUDA (the copy overlaps the previous step's kernels)."""
    cuda = device.type == "cuda"
    out = tuple((t.pin_memory() if cuda else t).to(device, non_blocking=cuda) for t in batch)
    if channels_last:
        out = (out[0].contiguous(memory_format=torch.channels_last), *out[1:])
    return out


def train_step(
    model,
    unwrapped,
    noise_scheduler,
    opt,
    lr_sched,
    ema,
    batches: tuple | Sequence[tuple],
    cfg,
    gen: torch.Generator,
    device: torch.device,
    switches: accel.Resolved | None = None,
) -> torch.Tensor:
    """One optimizer step over one (x, labels, domains, box_mask) batch or a list of micro-batches.

    Returns:
        the mean loss as a detached 0-dim tensor on ``device``: reading it (``float``) syncs
        the host with the device, so callers do that only when they log.
    """
    r = switches or resolve_training(cfg, device)
    micro = [batches] if isinstance(batches, tuple) else list(batches)
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for k, batch in enumerate(micro):
        # DDP all-reduces gradients on the last micro-batch only
        sync = nullcontext() if k == len(micro) - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            x, labels, domains, box_mask = to_device(batch, device, r.channels_last)
            labels, domains, box_mask = unet.drop_conditions(
                labels, domains, box_mask, cfg.cond_drop_prob, unwrapped.null_label, unwrapped.null_domain, gen
            )
            with accel.autocast(device, r.dtype):
                loss = diffusion.diffusion_loss(model, noise_scheduler, x, labels, domains, box_mask, generator=gen)
            (loss / len(micro)).backward()
        total += loss.detach()
    torch.nn.utils.clip_grad_norm_(unwrapped.parameters(), cfg.grad_clip)  # foreach on CUDA by default
    opt.step()
    lr_sched.step()
    ema.update(unwrapped)
    return total / len(micro)
