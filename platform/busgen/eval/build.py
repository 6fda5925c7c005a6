"""Reuse or build: a run's inputs come from a finished folder when there is one, else they are made there.

Suites, studies and the demo all need the same three inputs: a pretrained generator, a
few-shot adapter and a synthetic set. Each function here returns the folder, building it
only when it is not finished yet (a model folder is finished when it has ``busgen.json``; a
synthetic set when its shards tile ``[0, n)``), and times the build as one stage of the
caller's `busgen.core.timings.Timings`. Interrupted runs therefore resume where they
stopped: Ray Train resumes a run of the same name, generation the shards already written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from busgen.core.timings import Timings
from busgen.generate.config import GenerateError
from busgen.generate.resume import check_output
from busgen.generate.shards import GenerateConfig, generate
from busgen.model.generator import BUSGEN_JSON
from busgen.train.adapt import AdaptConfig, adapt
from busgen.train.pretrain import PretrainConfig, pretrain


def is_model(folder: str | Path) -> bool:
    """A finished model folder: the export writes ``busgen.json`` after the weights."""
    return (Path(folder) / BUSGEN_JSON).is_file()


def generator(
    out: str | Path, make: Callable[[], PretrainConfig] | None, timings: Timings, stage: str = "pretrain"
) -> str | None:
    """The generator at ``out``, pretrained there from ``make()`` when missing; None when missing and no ``make``."""
    out = Path(out).resolve()
    if is_model(out):
        return str(out)
    if make is None:
        return None
    result = timings.timed(stage, pretrain, make())
    if getattr(result, "error", None) is not None:
        raise RuntimeError(f"pretraining {out} failed: {result.error}")
    return str(out)


def adapter(cfg: AdaptConfig, timings: Timings, stage: str = "adapt") -> str:
    """The adapter at ``cfg.out``, adapted there when missing."""
    if not is_model(cfg.out):
        timings.timed(stage, adapt, cfg)
    return str(Path(cfg.out).resolve())


def synthetic_set(cfg: GenerateConfig, timings: Timings, stage: str = "generate", tag: str | None = None) -> str:
    """The synthetic set at ``cfg.out``; generated (resuming from the shards written) unless it tiles ``[0, n)``."""
    try:  # manifest.json is written first: only shards tiling [0, n) mean a finished set
        check_output(cfg.out, cfg.n, cfg.shard_size)
        return cfg.out
    except (GenerateError, FileNotFoundError):
        pass
    summary = timings.timed(stage, generate, cfg, False)
    if tag:
        print(f"[{tag}] {stage}: {summary.line()}", flush=True)
    return cfg.out
