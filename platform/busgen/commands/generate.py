"""Generation commands: ``sample`` (a quick grid PNG, in-process) and ``generate`` (a synthetic set with Ray Data,
resumed after failures, its tiling checked)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command
from busgen.core.types import (
    DEFAULT_GUIDANCE,
    DEFAULT_PROTECT_MIN_FIT,
    DEFAULT_PROTECT_STRENGTH,
    DEFAULT_SAMPLER,
    ProtectName,
    SamplerName,
)


class SampleRun(BaseModel):
    """Draw a grid of samples per class from a generator and write it as one PNG (in-process, no Ray)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model folder (pretrained or adapted)")
    out: str = Field("samples.png", description="PNG file to write: one row per class")
    per_class: int = Field(8, ge=1, le=64, description="images per class (columns of the grid)")
    classes: list[str] | None = Field(None, description="rows to draw; default: every class of the model")
    domain: str | None = Field(None, description="domain condition (site/scanner); default: domain-unconditional")
    steps: int | None = Field(
        None, ge=1, description="denoising steps; None = the model's own (25, or a distilled student's count)"
    )
    guidance: float = Field(DEFAULT_GUIDANCE, description="classifier-free guidance scale (1 = none)")
    sampler: SamplerName = Field(DEFAULT_SAMPLER, description="ddim | ddpm | dpmpp | unipc")
    seed: int = Field(0, description="image i of each row uses seed + i: the same seed gives the same grid")
    cell: int = Field(0, ge=0, description="tile side in the PNG; 0 = the model's image size")
    protect: ProtectName = Field("none", description="cpsample: steer away from training images (busgen.model.protect)")
    protect_strength: float = Field(DEFAULT_PROTECT_STRENGTH, ge=0, description="CPSample alpha")
    protect_min_fit: float = Field(
        DEFAULT_PROTECT_MIN_FIT, ge=0, le=1, description="refuse a protection classifier fitting its labels worse"
    )


def run_sample(cfg: SampleRun) -> dict:
    from busgen.data.report import image_grid
    from busgen.model import generator

    if cfg.protect != "none":  # fail closed before loading weights: no classifier, or one that did not fit
        from busgen.model.protect import check_protect_fit

        check_protect_fit(cfg.model, cfg.protect_min_fit)
    gen = generator.load(cfg.model)
    classes = cfg.classes or list(gen.class_names)
    unknown = sorted(set(classes) - set(gen.class_names))
    if unknown:
        raise ValueError(f"classes {unknown} are not classes of {cfg.model} ({', '.join(gen.class_names)})")
    rows = {
        c: gen.sample(
            [c] * cfg.per_class,
            cfg.domain,
            steps=cfg.steps,
            guidance=cfg.guidance,
            seed=cfg.seed,
            sampler=cfg.sampler,
            protect=cfg.protect,
            protect_strength=cfg.protect_strength,
            protect_min_fit=cfg.protect_min_fit,
        )
        for c in classes
    }
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, cell=cfg.cell or gen.image_size).save(out)
    return {
        "out": str(out),
        "images": cfg.per_class * len(classes),
        "protect": cfg.protect,
        "summary": f"wrote {len(classes)} x {cfg.per_class} samples to {out}"
        + (f" (protect={cfg.protect}, fit floor {cfg.protect_min_fit})" if cfg.protect != "none" else ""),
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


COMMANDS = (
    Command("sample", f"{__name__}:SampleRun", f"{__name__}:run_sample", location_fields=("model", "out")),
    Command(
        "generate",
        "busgen.generate.resume:GenerateJobConfig",
        f"{__name__}:run_generate",
        location_fields=("model", "out", "boxes_file"),
    ),
)
