"""Model commands: train an autoencoder, pretrain a generator (pixel or latent), adapt it few-shot, distil it to few
steps, train its protection classifier, export it to the Hub, train a servable diagnosis classifier."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command, Interrupted
from busgen.core.types import DEFAULT_PROTECT_MIN_FIT


@contextmanager
def resumable(line: str):
    """Turn Ctrl-C inside the block into ``Interrupted(line)``, which the CLI prints as one line.

    Ray Train's own SIGINT handler (registered in ``fit``) aborts the run gracefully and
    then leaves with ``sys.exit(0)`` from inside ``fit``: that ``SystemExit`` is Ctrl-C too.
    """
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise Interrupted(line) from None


def resume_line(kind: str, run_name: str, storage_path: str, checkpoint_every: int, max_steps: int) -> str:
    """The one line Ctrl-C prints: how to resume this training run (or that it starts over)."""
    where = f"run {run_name} in {storage_path}"
    if checkpoint_every >= max_steps:
        return (
            f"interrupted: {kind} keeps a checkpoint only at its last step, so nothing was saved; "
            f"run the same command with run_name={run_name} to start it again"
        )
    return (
        f"interrupted: run the same command again (run_name={run_name}) to resume {where} "
        f"from its latest checkpoint (one every {checkpoint_every} steps)"
    )


def run_pretrain(cfg) -> dict:
    from busgen.core.raylocal import init_ray
    from busgen.model import generator
    from busgen.train.pretrain import pretrain

    init_ray()
    with resumable(resume_line("pretrain", cfg.run_name, cfg.storage_path, cfg.checkpoint_every, cfg.max_steps)):
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


def run_autoencoder(cfg) -> dict:
    import json

    from busgen.core.raylocal import init_ray
    from busgen.model.autoencoder import AUTOENCODER_JSON
    from busgen.train.autoencoder import train_autoencoder

    init_ray()
    result = train_autoencoder(cfg)
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    meta = json.loads((Path(cfg.out) / AUTOENCODER_JSON).read_text())
    m = meta.get("metrics") or {}
    return {
        "out": cfg.out,
        "autoencoder_id": meta["autoencoder_id"],
        "step": meta["train_steps"],
        **m,
        "summary": f"trained a factor-{cfg.factor} autoencoder to step {meta['train_steps']} "
        f"(L1 {m.get('l1', float('nan')):.4f}, MS-SSIM {m.get('msssim', float('nan')):.3f}) -> {cfg.out}; "
        f"train a latent generator with `busgen pretrain autoencoder={cfg.out}`",
    }


def run_adapt(cfg) -> dict:
    import json

    from busgen.core.raylocal import init_ray
    from busgen.train.adapt import SUPPORT_JSON, adapt, default_run_name

    init_ray()
    cfg = cfg.model_copy(update={"run_name": cfg.run_name or default_run_name(cfg)})  # named, so it can resume
    # adapt checkpoints once, at max_steps (train.adapt: checkpoint_every=max_steps)
    with resumable(resume_line("adapt", cfg.run_name, cfg.storage_path, cfg.max_steps, cfg.max_steps)):
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


def run_train_classifier(cfg) -> dict:
    from busgen.measure.classifier_fit import fit_classifier

    m = fit_classifier(cfg)
    test = f", test AUC {m['test_auc']:.3f} acc {m['test_acc']:.3f}" if "test_auc" in m else ", no test split"
    summary = (
        f"classifier trained on {m['n_train']} images, {m['stopped']} after {m['epochs']} epochs "
        f"(val AUC {m['val_auc']:.3f}{test}) -> {cfg.out}; serve it: busgen serve --classifier {cfg.out}"
    )
    return {**m, "out": cfg.out, "summary": summary}


_HERE = __name__
COMMANDS = (
    Command(
        "pretrain",
        "busgen.train.pretrain:PretrainConfig",
        f"{_HERE}:run_pretrain",
        location_fields=("data_dir", "storage_path", "out", "autoencoder", "latent_cache"),
    ),
    Command(
        "autoencoder",
        "busgen.train.autoencoder:AutoencoderTrainConfig",
        f"{_HERE}:run_autoencoder",
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
    Command(
        "train-classifier",
        "busgen.measure.classifier_fit:TrainClassifierRun",
        f"{_HERE}:run_train_classifier",
        location_fields=("data_dir", "out"),
    ),
)
