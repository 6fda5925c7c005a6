"""The generate command: a synthetic image set with Ray Data, resumed after failures, its tiling checked."""

from __future__ import annotations

from busgen.commands.command import Command


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
    Command(
        "generate",
        "busgen.generate.resume:GenerateJobConfig",
        f"{__name__}:run_generate",
        location_fields=("model", "out", "boxes_file"),
    ),
)
