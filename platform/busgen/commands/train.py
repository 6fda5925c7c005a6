"""Model commands: pretrain a generator, adapt it few-shot, distil it to few steps, train its protection classifier,
export it to the Hub."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command
from busgen.core.types import DEFAULT_PROTECT_MIN_FIT


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


def run_distill(cfg) -> dict:
    import json

    from busgen.train.distill import distill

    folders = distill(cfg)
    metas = {f.name: json.loads((f / "busgen.json").read_text()) for f in folders}
    return {
        "out": cfg.out,
        "students": ",".join(str(f) for f in folders),
        "model_ids": ",".join(m["model_id"] for m in metas.values()),
        "summary": f"distilled {cfg.teacher} into {', '.join(metas)} (guidance {cfg.guidance_min}-{cfg.guidance_max})"
        f" -> {cfg.out}",
    }


def run_protect(cfg) -> dict:
    from busgen.train.protect import train_protect

    meta = train_protect(cfg)
    fitted = "fits" if meta["fitted"] else "does NOT fit (raise max_epochs, max_minutes or width)"
    floor = ""
    if meta["fit_accuracy"] < DEFAULT_PROTECT_MIN_FIT:
        floor = f"; protected sampling refuses it (below the default protect_min_fit {DEFAULT_PROTECT_MIN_FIT})"
    return {
        "out": meta["out"],
        "protect_id": meta["protect_id"],
        "epochs": meta["epochs"],
        "fit_accuracy": meta["fit_accuracy"],
        "fitted": meta["fitted"],
        "summary": f"protection classifier of {cfg.model} {fitted} its random labels "
        f"(accuracy {meta['fit_accuracy']:.3f} after {meta['epochs']} epochs; data check: {meta['data_check']}) "
        f"-> {meta['out']}{floor}",
    }


class ExportHubRun(BaseModel):
    """Write a model folder as a Hugging Face Hub repository: model card, safetensors weights, configs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model folder (busgen pretrain or adapt --method full)")
    out: str = Field(description="repository folder to upload (huggingface-cli upload <repo id> OUT)")


def run_export_hub(cfg: ExportHubRun) -> dict:
    from busgen.model.hub import export_hub

    out = export_hub(cfg.model, cfg.out)
    return {"out": str(out), "summary": f"wrote a Hub repository of {cfg.model} to {out}"}


_HERE = __name__
COMMANDS = (
    Command(
        "pretrain",
        "busgen.train.pretrain:PretrainConfig",
        f"{_HERE}:run_pretrain",
        location_fields=("data_dir", "storage_path", "out"),
    ),
    Command(
        "adapt",
        "busgen.train.adapt:AdaptConfig",
        f"{_HERE}:run_adapt",
        location_fields=("base", "data_dir", "out", "storage_path"),
    ),
    Command(
        "distill",
        "busgen.train.distill:DistillConfig",
        f"{_HERE}:run_distill",
        location_fields=("teacher", "data_dir", "out", "storage_path"),
    ),
    Command(
        "protect", "busgen.train.protect:ProtectConfig", f"{_HERE}:run_protect", location_fields=("model", "data_dir")
    ),
    Command("export-hub", f"{_HERE}:ExportHubRun", f"{_HERE}:run_export_hub", ("model", "out")),
)
