"""Settings of a generation run, its error and warning types, and the optional boxes file.

Every settings problem is a ``GenerateError`` (a ``ValueError``) whose message names the
file or option, the problem and the remedy, so a command line can print it as one line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import BaseModel, Field

from busgen.core.types import (
    DEFAULT_GUIDANCE,
    DEFAULT_PROTECT_MIN_FIT,
    DEFAULT_PROTECT_STRENGTH,
    DEFAULT_PROTECT_THRESHOLD,
    DEFAULT_SAMPLER,
    ProtectName,
    SamplerName,
)

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


class GenerateError(ValueError):
    """Bad settings, a missing model, a busy output folder, or a re-run that does not match the existing output."""


class GenerateWarning(UserWarning):
    """Something was repaired on the way (a damaged shard regenerated, a dead run's lock taken over)."""


class GenerateConfig(BaseModel):
    """Settings of one generation run. Everything that changes pixels is part of the manifest."""

    model: str = Field(description="exported model directory (pretrained or adapted)")
    out: str = Field(description="output folder of shards + manifest.json")
    n: int = Field(1000, gt=0, description="number of images")
    class_ratio: dict[str, float] | None = Field(
        None, description='e.g. {"benign": 0.5, "malignant": 0.5}; default: uniform over model classes'
    )
    domain_ratio: dict[str, float] | None = Field(
        None, description='e.g. {"siteA": 1.0}; default: domain-unconditional'
    )
    boxes_file: str | None = Field(
        None, description="CSV with x0,y0,x1,y1 columns: row i uses line i mod len; default: box prior"
    )
    sampler: SamplerName = Field(DEFAULT_SAMPLER, description="ddim | ddpm | dpmpp | unipc")
    steps: int | None = Field(
        None, ge=1, description="denoising steps; None = the model's own (25, or a distilled student's count)"
    )
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0, description="classifier-free guidance scale (1 = none)")
    seed: int = Field(0, description="base seed: image i always gets the same noise")
    shard_size: int = Field(1000, ge=1, description="rows per shard file (bounds shard rows and bytes)")
    batch_size: int = Field(32, ge=1, description="images per forward pass")
    concurrency: int = Field(1, ge=1, description="sampler actors")
    num_gpus: float = Field(0.0, description="GPUs per actor (1 on GPU clusters)")
    num_cpus: float = Field(
        0.5, description="CPUs per actor; fractional so read/write tasks still get a CPU on small machines"
    )
    torch_threads: int = Field(0, description="intra-op threads per actor; 0 = cores / concurrency")
    protect: ProtectName = Field("none", description="cpsample: steer away from training images (busgen.model.protect)")
    protect_strength: float = Field(DEFAULT_PROTECT_STRENGTH, ge=0, description="CPSample alpha")
    protect_threshold: float = Field(
        DEFAULT_PROTECT_THRESHOLD, ge=0.5, lt=1.0, description="guide above this confidence"
    )
    protect_min_fit: float = Field(
        DEFAULT_PROTECT_MIN_FIT,
        ge=0,
        le=1,
        description="refuse a protection classifier fitting its labels worse (recorded in the manifest)",
    )
    tracking: bool = Field(
        True, description="MLflow run with the settings, throughput and manifest.json (busgen.core.tracking)"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow server or store; None = $MLFLOW_TRACKING_URI, else runs/mlruns (one store for all)"
    )

    def pixel_settings(self) -> dict:
        """The settings that determine the images: a re-run must match them exactly."""
        return self.model_dump(
            include={
                "n",
                "class_ratio",
                "domain_ratio",
                "sampler",
                "steps",
                "guidance",
                "seed",
                "shard_size",
                "boxes_file",
            }
            | ({"protect", "protect_strength", "protect_threshold"} if self.protect != "none" else set())
        )


def read_boxes_file(path: str | None) -> list[list[float]] | None:
    """Boxes of a CSV with a header line naming x0,y0,x1,y1 (other columns are ignored); None without a file.

    Raises:
        GenerateError: the file is missing or unreadable, lacks a box column, has a non-numeric value, or no rows.
    """
    if not path:
        return None
    fp = Path(path)
    layout = "write a CSV whose header line names x0,y0,x1,y1 and one normalised box [0, 1] per line"
    try:
        with open(fp, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [k for k in BOX_COLUMNS if k not in header]
            if missing:
                raise GenerateError(
                    f"boxes file {fp} has no column {', '.join(missing)} (header: {','.join(header) or 'empty'}): "
                    f"{layout}"
                )
            rows = []
            for line, r in enumerate(reader, start=2):
                try:
                    rows.append([float(r[k]) for k in BOX_COLUMNS])
                except (TypeError, ValueError):
                    values = ",".join(str(r[k]) for k in BOX_COLUMNS)
                    raise GenerateError(
                        f"boxes file {fp} line {line}: {values} are not four numbers: {layout}"
                    ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GenerateError(f"boxes file {fp} cannot be read ({exc}): {layout}") from None
    if not rows:
        raise GenerateError(f"boxes file {fp} has no rows: {layout}")
    return rows
