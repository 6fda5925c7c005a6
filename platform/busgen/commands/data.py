"""Data commands: write the phantom, ingest a dataset, combine sites, report on a dataset, export PNGs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command
from busgen.core import remote
from busgen.core.storage import is_uri
from busgen.data.ingest import IngestConfig, IngestError, ingest


class PhantomRun(BaseModel):
    """Write a deterministic breast-ultrasound phantom dataset (the embedded default data)."""

    model_config = ConfigDict(extra="forbid")

    out: str = Field(description="output folder (class folders with *_mask.png siblings)")
    n: int = Field(300, ge=1, description="number of images")
    size: int = Field(64, ge=8, description="image side in pixels")
    seed: int = Field(0, description="base seed; the same seed gives identical bytes")
    style: Literal["a", "b"] = Field("a", description="simulated device")
    classes: list[Literal["benign", "malignant", "normal"]] = Field(
        ["benign", "malignant", "normal"], description="classes to draw (a subset makes a smaller task)"
    )


def run_phantom(cfg: PhantomRun) -> dict:
    from busgen.data.phantom import write_phantom

    write_phantom(cfg.out, cfg.n, cfg.size, cfg.seed, cfg.style, tuple(cfg.classes))
    return {"out": cfg.out, "images": cfg.n, "summary": f"wrote {cfg.n} phantom images ({cfg.size}px) to {cfg.out}"}


class IngestRun(IngestConfig):
    """Ingest a BUS dataset (folders, BUSI, CSV manifest, DICOM) into Parquet with Ray Data."""

    model_config = ConfigDict(extra="forbid")

    src: str = Field(description="class-folder tree, folder with labels.csv, or CSV manifest")
    out: str = Field(
        description="output dataset folder, or an s3://-style URI (staged locally, then published: busgen.core.remote)"
    )
    progress: bool = Field(False, description="progress bar on stderr")
    stage_dir: str | None = Field(None, description="local staging root for a URI out (default ~/busgen_runs/staging)")


def run_ingest(cfg: IngestRun) -> dict:
    ingest_cfg = IngestConfig(**cfg.model_dump(exclude={"src", "out", "progress", "stage_dir"}))
    local = remote.local_dir(cfg.out, cfg.stage_dir)
    if is_uri(cfg.out) and remote.has_entries(cfg.out):
        if not cfg.overwrite:
            raise IngestError(
                f"error: output {cfg.out} already exists and is not empty: choose another --out or --overwrite"
            )
        remote.clear(cfg.out)
    summary = ingest(
        cfg.src,
        local,
        ingest_cfg.model_copy(update={"overwrite": ingest_cfg.overwrite or is_uri(cfg.out)}),
        progress=cfg.progress,
    )
    if is_uri(cfg.out):  # dataset.json last: a reader that sees it sees every Parquet file
        remote.publish(local, cfg.out, marker="dataset.json")
    lines = [summary.line()] + [
        f"  {split}: " + ", ".join(f"{k}={v}" for k, v in counts.items()) for split, counts in summary.counts.items()
    ]
    return {
        "out": cfg.out,
        "rows": summary.n_ingested,
        "duplicates": summary.n_duplicates,
        "quarantined": summary.n_quarantined,
        "summary": "\n".join(lines),
    }


def run_combine(cfg) -> dict:
    from busgen.data.combine import combine

    info = combine(cfg)
    lines = [f"combined {len(cfg.inputs)} datasets ({info['n_images']} images) -> {cfg.out}"]
    for domain, splits in info["counts_by_domain"].items():
        lines.append(
            f"  {domain}: "
            + "; ".join(f"{s} " + ", ".join(f"{k}={v}" for k, v in c.items()) for s, c in splits.items())
        )
    return {
        "out": cfg.out,
        "images": info["n_images"],
        "domains": ",".join(info["domains"]),
        "summary": "\n".join(lines),
    }


class DatasetReportRun(BaseModel):
    """Write a Markdown report of a dataset: counts, quarantine, sample grid per class."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="ingested or synthetic dataset folder")
    out: str = Field(description="report folder (report.md + PNGs)")


def run_dataset_report(cfg: DatasetReportRun) -> dict:
    from busgen.data.report import dataset_report

    path = dataset_report(cfg.dataset, cfg.out)
    return {"report": str(path), "summary": f"report: {path}"}


class ExportPngRun(BaseModel):
    """Write the images of a dataset as PNG files, one folder per class."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="synthetic (or ingested) dataset folder")
    out: str = Field(description="output folder: <label>/<index>.png")


def run_export_png(cfg: ExportPngRun) -> dict:
    from busgen.generate.shards import export_png

    count = export_png(cfg.dataset, cfg.out)
    return {"images": count, "out": cfg.out, "summary": f"wrote {count} PNG files to {cfg.out}"}


_HERE = __name__
COMMANDS = (
    Command("phantom", f"{_HERE}:PhantomRun", f"{_HERE}:run_phantom"),
    Command("ingest", f"{_HERE}:IngestRun", f"{_HERE}:run_ingest", ("src",), ("src", "out")),
    Command("combine", "busgen.data.combine:CombineConfig", f"{_HERE}:run_combine", ("inputs",)),
    Command("dataset-report", f"{_HERE}:DatasetReportRun", f"{_HERE}:run_dataset_report", ("dataset",)),
    Command("export-png", f"{_HERE}:ExportPngRun", f"{_HERE}:run_export_png", ("dataset", "out")),
)
