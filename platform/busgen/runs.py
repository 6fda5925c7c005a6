"""Config classes and functions of the registered operations (``busgen.operations``).

Where a library function takes more than one config (a source and an output folder,
say), the operation gets a config here that names every input, so the CLI, jobs and
tests build it the same way. Each function returns a dict of JSON-able results; the
``summary`` entry is what the CLI prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from busgen.core import remote
from busgen.core.storage import is_uri
from busgen.data.ingest import IngestConfig, IngestError, ingest


class PhantomRun(BaseModel):
    """Write a deterministic breast-ultrasound phantom dataset (the embedded default data)."""

    model_config = ConfigDict(extra="forbid")

    out: str  # output folder (class folders with *_mask.png siblings)
    n: int = Field(300, ge=1)  # number of images
    size: int = Field(64, ge=8)  # image side in pixels
    seed: int = 0  # base seed; the same seed gives identical bytes
    style: Literal["a", "b"] = "a"  # simulated device
    classes: list[Literal["benign", "malignant", "normal"]] = ["benign", "malignant", "normal"]


def run_phantom(cfg: PhantomRun) -> dict:
    from busgen.data.phantom import write_phantom

    write_phantom(cfg.out, cfg.n, cfg.size, cfg.seed, cfg.style, tuple(cfg.classes))
    return {"out": cfg.out, "images": cfg.n, "summary": f"wrote {cfg.n} phantom images ({cfg.size}px) to {cfg.out}"}


class IngestRun(IngestConfig):
    """Ingest a BUS dataset (class folders, BUSI, CSV manifest, DICOM) into Parquet with Ray Data."""

    model_config = ConfigDict(extra="forbid")

    src: str  # class-folder tree, folder with labels.csv, or CSV manifest
    out: str  # output dataset folder, or an s3://-style URI (staged locally, then published: busgen.core.remote)
    progress: bool = False  # progress bar on stderr
    stage_dir: str | None = None  # local staging root for a URI out (default ~/busgen_runs/staging)


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

    dataset: str  # ingested or synthetic dataset folder
    out: str  # report folder (report.md + PNGs)


def run_dataset_report(cfg: DatasetReportRun) -> dict:
    from busgen.data.report import dataset_report

    path = dataset_report(cfg.dataset, cfg.out)
    return {"report": str(path), "summary": f"report: {path}"}


def run_pretrain(cfg) -> dict:
    from busgen.core.raylocal import init_ray
    from busgen.model import generator
    from busgen.train.pretrain import pretrain

    init_ray()
    result = pretrain(cfg)
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    gen = generator.load(cfg.out, device="cpu")
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and k != "epoch"}
    summary = (
        f"pretrained {cfg.preset} to step {metrics.get('step')} (loss {metrics.get('loss_avg', float('nan')):.4f})"
        f" -> {cfg.out}"
    )
    return {
        **metrics,
        "out": cfg.out,
        "model_id": gen.model_id,
        "run_name": cfg.run_name,
        "classes": ",".join(gen.class_names),
        "domains": ",".join(gen.domain_names),
        "summary": summary,
    }


def run_protect(cfg) -> dict:
    from busgen.train.protect import train_protect

    meta = train_protect(cfg)
    fitted = "fits" if meta["fitted"] else "does NOT fit (raise max_epochs or width)"
    return {
        "out": meta["out"],
        "protect_id": meta["protect_id"],
        "epochs": meta["epochs"],
        "fit_accuracy": meta["fit_accuracy"],
        "fitted": meta["fitted"],
        "summary": f"protection classifier of {cfg.model} {fitted} its random labels "
        f"(accuracy {meta['fit_accuracy']:.3f} after {meta['epochs']} epochs) -> {meta['out']}",
    }


def run_adapt(cfg) -> dict:
    import json

    from busgen.core.raylocal import init_ray
    from busgen.train.adapt import SUPPORT_JSON, adapt

    init_ray()
    out = adapt(cfg)
    support = json.loads((out / SUPPORT_JSON).read_text())
    meta = json.loads((out / "busgen.json").read_text())
    return {
        "out": str(out),
        "method": cfg.method,
        "shots": cfg.shots,
        "support_images": len(support["images"]),
        "classes": ",".join(meta["class_names"]),
        "model_id": meta["model_id"],
        "train_steps": meta.get("train_steps"),
        "summary": f"adapted {cfg.base} with {cfg.shots} shots per class ({cfg.method}) -> {out}",
    }


def run_generate(cfg) -> dict:
    """Generate, re-running after a failure (each re-run resumes from the shards written), then check the tiling."""
    from busgen.generate.resume import check_output, publish_output, run_with_resume
    from busgen.generate.store import track_generation

    summary, attempts = run_with_resume(cfg)
    local = cfg.generate_config()  # cfg.out itself, or the staging folder of an s3://-style out
    rows = check_output(local.out, cfg.n, cfg.shard_size)
    published = publish_output(cfg)  # shards, then manifest.json; nothing for a local out
    result = {
        "out": cfg.out,
        "images": rows,
        "generated": summary.generated,
        "skipped": summary.skipped,
        "attempts": attempts,
        "images_per_s": round(summary.images_per_s, 3),
        "published": len(published),
        "summary": summary.line() + (f"; published {len(published)} files to {cfg.out}" if published else ""),
    }
    return result | {"tracking": track_generation(local, result)}


class ExportHubRun(BaseModel):
    """Write a model folder as a Hugging Face Hub repository: model card, safetensors weights, configs."""

    model_config = ConfigDict(extra="forbid")

    model: str  # model folder (busgen pretrain or adapt --method full)
    out: str  # repository folder to upload (huggingface-cli upload <repo id> OUT)


def run_export_hub(cfg: ExportHubRun) -> dict:
    from busgen.model.hub import export_hub

    out = export_hub(cfg.model, cfg.out)
    return {"out": str(out), "summary": f"wrote a Hub repository of {cfg.model} to {out}"}


class ExportPngRun(BaseModel):
    """Write the images of a dataset as PNG files, one folder per class."""

    model_config = ConfigDict(extra="forbid")

    dataset: str  # synthetic (or ingested) dataset folder
    out: str  # output folder: <label>/<index>.png


def run_export_png(cfg: ExportPngRun) -> dict:
    from busgen.generate.shards import export_png

    count = export_png(cfg.dataset, cfg.out)
    return {"images": count, "out": cfg.out, "summary": f"wrote {count} PNG files to {cfg.out}"}


def run_evaluate(cfg) -> dict:
    from busgen.core.raylocal import job_run_id
    from busgen.eval.runner import run_suite

    result = run_suite(cfg, run_id=job_run_id())
    metrics = result.metrics.flat()
    report = Path(cfg.out).resolve() / "report.md"
    if failed := result.trials_failed():
        raise RuntimeError(f"{failed} Tune trial(s) failed; see {report}")
    scalars = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    return {**metrics, "report": str(report), "summary": f"{scalars}\nreport: {report}"}


def run_sweep(cfg) -> dict:
    from busgen.eval.sweep import run_sweep as run

    return run(cfg)


class ShareFilterRun(BaseModel):
    """Write a shareable copy of a synthetic set without memorised or copied images, with an audit record."""

    model_config = ConfigDict(extra="forbid")

    synthetic: str  # synthetic dataset folder (busgen generate output)
    real: str  # the generator's real training data (ingested dataset)
    out: str  # filtered copy: Parquet + manifest + audit.json
    split: str | None = "train"  # split of `real` the generator trained on (null = all rows)
    encoder_epochs: int = Field(30, ge=1)  # copy-encoder (SimCLR) training epochs
    check_real: bool = True  # refuse a `real` set that is not the generator's training data (fail closed)


def run_share_filter(cfg: ShareFilterRun) -> dict:
    from busgen.eval.runner import share_filter_dir

    record = share_filter_dir(
        cfg.synthetic, cfg.real, cfg.out, cfg.split or None, cfg.encoder_epochs, check_real=cfg.check_real
    )
    audit = Path(cfg.out) / "audit.json"
    summary = (
        f"kept {record['rows_out']} of {record['rows_in']} images ({record['n_copies']} copies, "
        f"{record['n_mem']} memorised removed) -> {cfg.out} (audit: {audit})"
    )
    return {k: record[k] for k in ("rows_in", "rows_out", "n_copies", "n_mem")} | {"summary": summary}


def run_few_shot(cfg) -> dict:
    from busgen.core.raylocal import init_ray
    from busgen.eval.fewshot import run_few_shot as run

    init_ray()
    rows = run(cfg)
    return {f"domain_score_k{r['shots']}": r["domain_score"] for r in rows} | {
        f"fid_k{r['shots']}": r["fid"] for r in rows
    }


def run_multisite(cfg) -> dict:
    from busgen.eval.multisite.runner import run_multisite as run

    result = run(cfg)
    return result | {"summary": f"{result['rows']} rows in {result['seconds']} s\nreport: {result['report']}"}


class DemoRun(BaseModel):
    """Run the whole pipeline on CPU (data, ingest, pretrain, generate, evaluate) and write a report."""

    model_config = ConfigDict(extra="forbid")

    out: str = "demo_out"  # output folder; the report is <out>/report.md
    data: str = "phantom"  # phantom | busi (the shared real BUSI copy) | a folder to ingest
    size: int = Field(32, ge=16)  # image side in pixels
    train_steps: int = Field(600, ge=1)  # pretraining steps
    n_synthetic: int = Field(300, ge=1)  # synthetic images to generate


def run_demo(cfg: DemoRun) -> dict:
    from busgen.demo import DemoConfig
    from busgen.demo import run_demo as run

    run(DemoConfig(**cfg.model_dump()))
    report = Path(cfg.out) / "report.md"
    return {"report": str(report), "summary": f"report: {report}"}


class ServeRun(BaseModel):
    """Serve generators and a classifier over HTTP with Ray Serve (token from $BUSGEN_API_TOKEN)."""

    model_config = ConfigDict(extra="forbid")

    generator: dict[str, str]  # model id -> model folder; the first is the default (CLI: --generator ID=DIR,...)
    classifier: str | None = None  # saved classifier folder
    host: str = "127.0.0.1"  # HTTP bind address
    port: int = Field(8000, ge=1, le=65535)  # HTTP port
    insecure_local: bool = False  # disable bearer-token auth (loopback demos only)
    reference: str | None = None  # training Parquet set: nearest-image check and real reader-study items (/ui)
    gallery: dict[str, str] = {}  # name -> generated Parquet set shown in the playground (CLI: --gallery NAME=DIR)
    study_dir: str | None = None  # reader-study answers are written here as Parquet


def run_serve(cfg: ServeRun) -> dict:
    from busgen.serve.app import run_local

    url = run_local(
        dict(cfg.generator),
        cfg.classifier,
        host=cfg.host,
        port=cfg.port,
        insecure_local=cfg.insecure_local,
        reference_parquet=cfg.reference,
        galleries=dict(cfg.gallery),
        study_dir=cfg.study_dir,
    )
    return {"url": url}
