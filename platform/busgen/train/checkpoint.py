"""Training state on disk: what a Ray Train checkpoint holds and how a worker gets it back.

Rank 0 writes the shared state (model, EMA, optimizer, LR schedule, step) and every
rank its own RNG streams, so a resumed run continues bit-for-bit where it stopped
(Ray Train merges the per-rank checkpoint folders).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "state.pt"  # rank 0: model, EMA, optimizer, LR schedule, step
RNG_FILE = "rng_rank{rank}.pt"  # every rank: its own RNG streams


class EMA:
    """Exponential moving average of a model's floating-point state (params and buffers).

    The decay ramps up as (1 + step) / (10 + step) so early, random weights fade quickly.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.cpu() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = state["num_updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """Short sha256 of a state dict's tensors: lets a resumed run prove it loaded the checkpoint."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def make_rngs(seed: int, rank: int) -> tuple[torch.Generator, np.random.Generator]:
    """Per-rank streams for noise/timesteps/dropout (torch) and augmentation (numpy)."""
    return torch.Generator().manual_seed(seed * 1000 + rank), np.random.default_rng([seed, rank])


def save_checkpoint(
    ckpt_dir: Path, rank: int, unwrapped, ema, opt, lr_sched, step: int, gen, np_rng, meta: dict
) -> None:
    """Rank 0 writes the shared training state; every rank writes its own RNG file (Ray merges the dirs)."""
    if rank == 0:
        state = {
            "model": unwrapped.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "lr_scheduler": lr_sched.state_dict(),
            "step": step,
        }
        torch.save(state, ckpt_dir / STATE_FILE)
        (ckpt_dir / "meta.json").write_text(json.dumps({**meta, "step": step}))
    rng = {"torch": gen.get_state(), "numpy": np_rng.bit_generator.state, "torch_global": torch.get_rng_state()}
    torch.save(rng, ckpt_dir / RNG_FILE.format(rank=rank))


def restore_checkpoint(ckpt_dir: Path, rank: int, unwrapped, ema, opt, lr_sched, gen, np_rng) -> int:
    """Load everything ``save_checkpoint`` wrote; returns the step to continue from."""
    state = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=False)
    unwrapped.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    lr_sched.load_state_dict(state["lr_scheduler"])
    rng_fp = ckpt_dir / RNG_FILE.format(rank=rank)
    if rng_fp.exists():  # absent when the worker count grew since the checkpoint
        rng = torch.load(rng_fp, weights_only=False)
        gen.set_state(rng["torch"])
        np_rng.bit_generator.state = rng["numpy"]
        torch.set_rng_state(rng["torch_global"])
    return int(state["step"])
