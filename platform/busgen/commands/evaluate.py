"""Evaluation commands: run a suite, run a grid sweep, write a shareable (filtered) copy of a synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command


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


class ShareFilterRun(BaseModel):
    """Write a shareable copy of a synthetic set without memorised or copied images, with an audit record."""

    model_config = ConfigDict(extra="forbid")

    synthetic: str = Field(description="synthetic dataset folder (busgen generate output)")
    real: str = Field(
        description="the generator's real training data (adapted: its base model's; the support set is added)"
    )
    out: str = Field(description="filtered copy: Parquet + manifest + audit.json")
    split: str | None = Field("train", description="split of `real` the generator trained on (null = all rows)")
    encoder_epochs: int = Field(30, ge=1, description="copy-encoder (SimCLR) training epochs")
    check_real: bool = Field(
        True,
        description="refuse a `real` set that is not the generator's training data (fail closed); "
        "false = members are exactly `real` (recorded)",
    )


def run_share_filter(cfg: ShareFilterRun) -> dict:
    from busgen.eval.share import share_filter_dir

    record = share_filter_dir(
        cfg.synthetic, cfg.real, cfg.out, cfg.split or None, cfg.encoder_epochs, check_real=cfg.check_real
    )
    audit = Path(cfg.out) / "audit.json"
    summary = (
        f"kept {record['rows_out']} of {record['rows_in']} images ({record['n_copies']} copies, "
        f"{record['n_mem']} memorised removed) -> {cfg.out} (audit: {audit})"
    )
    return {k: record[k] for k in ("rows_in", "rows_out", "n_copies", "n_mem")} | {"summary": summary}


def run_reference_encoder(cfg) -> dict:
    from busgen.measure.reference_fit import fit_reference

    weights = fit_reference(cfg)
    meta = json.loads((weights.parent / f"{cfg.version}.json").read_text())
    summary = (
        f"reference encoder {cfg.version} (sha256 {meta['sha256'][:12]}), {meta['n_train']} train images, "
        f"best val AUC {meta['best_val_auc']:.3f} -> {weights}"
    )
    return {"sha256": meta["sha256"], "weights": str(weights), "summary": summary}


def run_pretrain_backbone(cfg) -> dict:
    from busgen.measure.arrays import read_splits
    from busgen.measure.backbone import pretrain_backbone

    images = read_splits(cfg.data_dir, None, None)[0]
    weights = pretrain_backbone(images, cfg, source=f"every row of {cfg.data_dir} ({len(images)} images)")
    return {"weights": str(weights), "summary": f"backbone pretrained on {len(images)} images -> {weights}"}


_HERE = __name__
COMMANDS = (
    Command(
        "evaluate",
        "busgen.eval.suites:SuiteConfig",
        f"{_HERE}:run_evaluate",
        location_fields=("real_dir", "model", "synthetic_dir", "source", "out"),
    ),
    Command(
        "sweep", "busgen.eval.sweep:SweepConfig", "busgen.eval.sweep:run_sweep", location_fields=("out", "storage_path")
    ),
    Command("share-filter", f"{_HERE}:ShareFilterRun", f"{_HERE}:run_share_filter", ("synthetic",)),
    Command(
        "pretrain-backbone",
        "busgen.measure.backbone:BackboneConfig",
        f"{_HERE}:run_pretrain_backbone",
        ("data_dir", "out"),
    ),
    Command(
        "reference-encoder",
        "busgen.measure.reference_fit:ReferenceFitConfig",
        f"{_HERE}:run_reference_encoder",
        ("out",),
    ),
)
