"""Helpers of the GPU benchmarks (``gpu_train.py``, ``gpu_sample.py``): timing, FLOPs, MFU, the Ray check.

These benchmarks run on bare GPU machines that have torch but no Ray (its wheel is too
large to bring there), so this module and its callers import only the standard library,
torch and ``busgen`` modules that need torch, diffusers and pydantic at most.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

H100_BF16_DENSE_TFLOPS = 790.0  # the figure the H100 measurements in shared NOTES.md use


@dataclass
class Row:
    """One switch setting: throughput and, where a peak is known, model FLOPs utilisation."""

    name: str
    images_per_s: float
    tflops: float
    mfu: float | None
    note: str = ""

    def line(self) -> str:
        mfu = f"{100 * self.mfu:5.1f}% MFU" if self.mfu is not None else "MFU n/a"
        note = f"  {self.note}" if self.note else ""
        return f"  {self.name:<38} {self.images_per_s:10.2f} img/s {self.tflops:9.4f} TFLOP/s  {mfu}{note}"


def pick_device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def default_peak(device: torch.device, given: float | None) -> float | None:
    """``--peak-tflops`` if given; the H100 bf16 dense figure on CUDA; None (MFU n/a) on CPU."""
    if given:
        return given
    return H100_BF16_DENSE_TFLOPS if device.type == "cuda" else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds for ``repeats`` calls of ``fn``, with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return time.perf_counter() - t0


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` by ``torch.utils.flop_counter`` (matmuls and convolutions, fwd and bwd)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def make_row(name: str, images_per_s: float, flops_per_image: float, peak: float | None, note: str = "") -> Row:
    tflops = images_per_s * flops_per_image / 1e12
    return Row(name, images_per_s, tflops, tflops / peak if peak else None, note)


def assert_no_ray() -> None:
    """Fail loudly if anything pulled Ray in: the GPU machines these run on have none."""
    loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
    if loaded:
        raise SystemExit(f"error: this benchmark imported Ray ({loaded[:3]}); it must run where Ray is absent")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


def rows_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
