"""Training state on disk: what a Ray Train checkpoint holds and how a worker gets it back.

Rank 0 writes the shared state (model, EMA, optimizer, LR schedule, step) and every
rank its own RNG streams, so a resumed run continues bit-for-bit where it stopped
(Ray Train merges the per-rank checkpoint folders).

Security: checkpoints live in shared run storage, and unpickling an arbitrary object
runs code. Everything saved here is tensors and plain values (numpy's bit-generator
state is a dict of ints and strings), so every load uses ``weights_only=True`` and a
file holding anything else is refused with ``CheckpointError``.

Identity: ``meta.json`` records what the run trains on (data fingerprint, architecture,
condition vocabularies, adapter). Same ``run_name`` + ``storage_path`` means resume, so
a run on other data or another model must not pick up those weights silently:
``check_identity`` refuses it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "state.pt"  # rank 0: model, EMA, optimizer, LR schedule, step
RNG_FILE = "rng_rank{rank}.pt"  # every rank: its own RNG streams
META_FILE = "meta.json"  # rank 0: class/domain names, config, run identity, step


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely (unexpected objects, truncated, unreadable)."""


class ResumeMismatchError(CheckpointError):
    """An existing run of the same name trained another dataset or model: resuming it would mix them."""


def load_torch_file(path: Path) -> dict:
    """``torch.load`` restricted to tensors and plain values: a crafted pickle is refused, never executed."""
    remedy = (
        "busgen checkpoints hold only tensors and plain values, so this file was written by something else or "
        "altered: delete that run folder, or start a fresh run with another run_name or storage_path"
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message opens with advice to retry unrestricted: keep only the lines that say why
        noise = ("Weights only load failed", "Please file an issue", "Check the documentation")
        why = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(noise)]
        raise CheckpointError(
            f"{path}: refused to load, it is not a file of tensors and plain values ({' '.join(why) or exc}); {remedy}"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc}); {remedy}") from None


def check_identity(stored_meta: dict, current: dict, run: str, where: str | Path) -> None:
    """Refuse to resume a checkpoint whose recorded run identity differs from the current run's.

    Args:
        stored_meta: the checkpoint's ``meta.json``.
        current: this run's identity (see ``pretrain.run_identity``).
        run: the run name, for the message.
        where: the checkpoint folder, for the message.

    Raises:
        ResumeMismatchError: naming the run, every field that differs and the remedy.
    """
    remedy = "pick another run_name (or storage_path) for this run, or delete the old run folder to start over"
    stored = stored_meta.get("identity")
    if not isinstance(stored, dict):
        raise ResumeMismatchError(
            f"run {run!r} already has a checkpoint at {where} that records no run identity (written by an older "
            f"busgen), so it cannot be checked against this run's data and model: {remedy}"
        )
    diffs = [
        f"{k}: checkpoint {stored.get(k)!r} != now {current.get(k)!r}"
        for k in sorted(set(stored) | set(current))
        if stored.get(k) != current.get(k)
    ]
    if diffs:
        raise ResumeMismatchError(
            f"run {run!r} already has a checkpoint at {where} from another dataset or model "
            f"({'; '.join(diffs)}); resuming would continue foreign weights: {remedy}"
        )


def check_local_run(run_dir: Path, current: dict, run: str) -> None:
    """Check every checkpoint of a run folder on local storage before any worker starts."""
    for meta_fp in sorted(run_dir.glob(f"*/{META_FILE}")):
        try:
            stored = json.loads(meta_fp.read_text())
        except (OSError, ValueError) as exc:
            raise ResumeMismatchError(
                f"run {run!r}: {meta_fp} is unreadable ({exc}): pick another run_name or storage_path"
            ) from None
        check_identity(stored, current, run, meta_fp.parent)


class EMA:
    """Exponential moving average of a model's weights: diffusers' ``EMAModel`` with ``foreach`` updates.

    The decay ramps up as (1 + k) / (10 + k) at the k-th update, capped at ``decay``, so
    early, random weights fade quickly (``update_after_step=-1`` makes diffusers' step count
    start there; ``tests/unit/train/test_train.py`` checks the numbers against the formula). One fused
    ``foreach`` update per step instead of a launch per tensor. Buffers (the UNet has no
    float ones) are taken from the model as they are when the state is saved.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        from diffusers.training_utils import EMAModel

        self.decay = decay
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.ema = EMAModel(
            model.parameters(), decay=decay, min_decay=0.0, update_after_step=-1, use_ema_warmup=False, foreach=True
        )

    @property
    def num_updates(self) -> int:
        return self.ema.optimization_step

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The averaged model as a full state dict (parameters averaged, buffers as in the model)."""
        state = {k: v.detach() for k, v in self.model.state_dict().items()}
        state.update(zip(self.names, self.ema.shadow_params))
        return state

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.ema.step(model.parameters())

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.detach().cpu().clone() for k, v in self.shadow.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.ema.optimization_step = int(state["num_updates"])
        for name, shadow in zip(self.names, self.ema.shadow_params):
            shadow.copy_(state["shadow"][name])


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """Short sha256 of a state dict's tensors: lets a resumed run prove it loaded the checkpoint."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def make_rngs(seed: int, rank: int, device: torch.device | str = "cpu") -> tuple[torch.Generator, np.random.Generator]:
    """Per-rank streams for noise/timesteps/dropout (torch, on ``device``) and augmentation (numpy).

    A CUDA generator draws noise where it is used: no host work and no copy per step.
    """
    gen = torch.Generator(device=torch.device(device)).manual_seed(seed * 1000 + rank)
    return gen, np.random.default_rng([seed, rank])


def worker_mismatch(exc: BaseException) -> str | None:
    """The message of a ``ResumeMismatchError`` raised in a worker, wherever Ray nested it."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ResumeMismatchError):
            return str(e)
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        todo += list((getattr(e, "worker_failures", None) or {}).values())
    return None


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
        (ckpt_dir / META_FILE).write_text(json.dumps({**meta, "step": step}))
    rng = {"torch": gen.get_state(), "numpy": np_rng.bit_generator.state, "torch_global": torch.get_rng_state()}
    torch.save(rng, ckpt_dir / RNG_FILE.format(rank=rank))


def restore_checkpoint(ckpt_dir: Path, rank: int, unwrapped, ema, opt, lr_sched, gen, np_rng) -> int:
    """Load everything ``save_checkpoint`` wrote; returns the step to continue from."""
    state = load_torch_file(ckpt_dir / STATE_FILE)
    unwrapped.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    lr_sched.load_state_dict(state["lr_scheduler"])
    rng_fp = ckpt_dir / RNG_FILE.format(rank=rank)
    if rng_fp.exists():  # absent when the worker count grew since the checkpoint
        rng = load_torch_file(rng_fp)
        if rng["torch"].numel() == gen.get_state().numel():  # a CPU and a CUDA generator's states differ in size
            gen.set_state(rng["torch"])
        np_rng.bit_generator.state = rng["numpy"]
        torch.set_rng_state(rng["torch_global"])
    return int(state["step"])


def storage_location(storage_path: str) -> str:
    """Absolute local path or the URI unchanged: Ray Train workers run in another working directory."""
    return storage_path if "://" in storage_path else str(Path(storage_path).expanduser().resolve())
