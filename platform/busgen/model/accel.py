"""Hardware switches for the UNet: precision, memory format, ``torch.compile``, CUDA graphs.

One typed config (``AccelConfig``) serves training and sampling, and ``resolve`` turns
its ``auto`` values into concrete choices for a device, so "on by default on CUDA, off
on CPU" is decided in one place:

* **precision**: ``auto`` = bf16 on CUDA, fp32 on CPU (CPU bf16 is slower than fp32 on
  most cores and only worth it where AMX exists). Training keeps fp32 master weights and
  autocasts; inference casts the *weights* (``fp16`` too), because a sampling forward
  with bf16 weights skips every per-op cast autocast would do.
* **channels_last**: NHWC convolutions are the fast cuDNN path for bf16 tensor cores.
  Harmless on CPU, so ``auto`` follows CUDA as well (it only matters there).
* **compile**: ``torch.compile`` of the UNet; ``auto`` = on CUDA only (CPU compile takes
  minutes on 2 cores and needs a C++ toolchain).
* **cuda_graphs**: ``compile(mode="reduce-overhead")`` replays fixed-shape kernels as CUDA
  graphs; only on CUDA, only with compile, so it is an explicit opt-in.

Bad combinations (fp16 or CUDA graphs off CUDA) raise ``AccelError`` with the remedy.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Switch = Literal["auto", "on", "off"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class AccelError(ValueError):
    """A switch that cannot apply on this device (e.g. CUDA graphs without CUDA)."""


class AccelConfig(BaseModel):
    """Speed switches of the UNet; ``auto`` means on for CUDA, off for CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: Precision = Field("auto", description="compute dtype: auto = bf16 on CUDA, fp32 on CPU")
    channels_last: Switch = Field("auto", description="NHWC memory format for convolutions")
    compile: Switch = Field("auto", description="torch.compile the UNet (CUDA default; minutes on CPU)")
    cuda_graphs: bool = Field(False, description='compile mode "reduce-overhead" (CUDA + compile only)')


@dataclass(frozen=True)
class Resolved:
    """Concrete choices for one device (what the code applies and what logs print)."""

    device: str
    dtype: torch.dtype
    channels_last: bool
    compile: bool
    cuda_graphs: bool

    def describe(self) -> str:
        dtype = {v: k for k, v in DTYPES.items()}[self.dtype]
        mode = "reduce-overhead" if self.cuda_graphs else "default"
        return (
            f"{self.device} {dtype}, channels_last={'on' if self.channels_last else 'off'}, "
            f"compile={'on (' + mode + ')' if self.compile else 'off'}"
        )


def _switch(value: Switch, cuda: bool) -> bool:
    return cuda if value == "auto" else value == "on"


def resolve(cfg: AccelConfig | None, device: torch.device | str) -> Resolved:
    """Turn ``auto`` into concrete choices for ``device`` and refuse what cannot run there.

    Raises:
        AccelError: fp16 or CUDA graphs requested off CUDA, or CUDA graphs without compile.
    """
    cfg = cfg or AccelConfig()
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    precision = ("bf16" if cuda else "fp32") if cfg.precision == "auto" else cfg.precision
    if precision == "fp16" and not cuda:
        raise AccelError(f"error: precision fp16 needs a CUDA device, got {dev}: use precision=bf16 or fp32 on CPU")
    compiled = _switch(cfg.compile, cuda)
    if cfg.cuda_graphs and not cuda:
        raise AccelError(f"error: cuda_graphs needs a CUDA device, got {dev}: set cuda_graphs=false")
    if cfg.cuda_graphs and not compiled:
        raise AccelError("error: cuda_graphs runs through torch.compile: set compile=on (or auto on CUDA)")
    return Resolved(dev.type, DTYPES[precision], _switch(cfg.channels_last, cuda), compiled, cfg.cuda_graphs)


def autocast(device: torch.device | str, dtype: torch.dtype):
    """bf16/fp16 autocast on ``device`` when ``dtype`` is not fp32; a no-op context otherwise."""
    dev = torch.device(device)
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


def compile_module(module: torch.nn.Module, cuda_graphs: bool = False) -> torch.nn.Module:
    """Compile ``module`` in place (``Module.compile``): state-dict keys and attributes stay as they were."""
    module.compile(mode="reduce-overhead" if cuda_graphs else None)
    return module


def for_inference(model: torch.nn.Module, r: Resolved) -> torch.nn.Module:
    """Cast weights to ``r.dtype``, switch to channels_last and compile, in place; returns ``model`` in eval mode.

    The sampling loop keeps its running latent in fp32 and casts only the network input,
    so bf16 weights change the rounding of each prediction, not the accumulation.
    """
    # nn.Module.to, not diffusers' override: that one warns about fp32-kept modules this model does not have
    model = torch.nn.Module.to(model, dtype=r.dtype).eval()
    if r.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if r.compile:
        compile_module(model, r.cuda_graphs)
    return model
