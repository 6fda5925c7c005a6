"""Synthetic generation as a Ray job: ``busgen.generate.shards`` plus a resume-on-failure loop and an output check.

Submit to a cluster (paths must be on storage every node mounts, e.g. EFS/FSx at /mnt/shared)::

    ray job submit --working-dir . -- python jobs/generate.py --config evals/suites/generate_small.yaml \\
        model=/mnt/shared/models/pretrain out=/mnt/shared/synthetic/run1 n=100000 \\
        num_gpus=1 concurrency=8 batch_size=64 --results-fp /mnt/shared/results/generate-run1.json

or run locally the same way without ``ray job submit --working-dir . --``.

Why it survives node failures: ``busgen.generate.shards`` writes each shard to a temporary file
that is renamed into place only when complete, and a run resumes by generating only the
missing shards. Ray Data restarts sampler actors and retries their shards when a node
dies; if a run still ends short (or raises), this job re-runs it up to ``max_attempts``
times, and each re-run finishes exactly the missing ranges. The job then checks that the
shards cover ``[0, n)`` exactly once before reporting success.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import field_validator

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from busgen.generate.shards import GenerateConfig, GenerateError, completed_shards, generate, shard_ranges, validate  # noqa: E402
from jobs import _common  # noqa: E402


class GenerateJobConfig(GenerateConfig):
    """``GenerateConfig`` plus the job's failure policy."""

    max_attempts: int = 3  # whole-run attempts; each re-run resumes from the shards already written
    progress: bool = False  # tqdm bar in the job log (noisy in `ray job logs`)

    @field_validator("max_attempts")
    @classmethod
    def _attempts_positive(cls, v):
        if v < 1:
            raise ValueError(f"max_attempts must be >= 1, got {v}")
        return v

    def generate_config(self) -> GenerateConfig:
        """The library config with paths made absolute, so every node writes where the driver looks."""
        fields = self.model_dump(exclude={"max_attempts", "progress"})
        if _common.is_uri(self.out):
            raise GenerateError(
                f"out={self.out}: generation writes shards to a POSIX path; "
                "use a filesystem every node mounts (EFS/FSx/NFS), then copy to object storage"
            )
        fields["out"] = _common.resolve_location(self.out)
        fields["model"] = _common.resolve_location(self.model)
        if self.boxes_file:
            fields["boxes_file"] = _common.resolve_location(self.boxes_file)
        return GenerateConfig(**fields)


def resource_demand(cfg: GenerateJobConfig) -> dict[str, float]:
    """Ray resources one sampler actor asks for: some node type of ``cluster.yaml`` must offer them."""
    return {k: v for k, v in {"CPU": cfg.num_cpus, "GPU": cfg.num_gpus}.items() if v}


def check_output(out: str | Path, n: int, shard_size: int) -> int:
    """Rows in the shard files, after checking they tile ``[0, n)`` exactly (no gap, no overlap, full shards).

    Reads only Parquet footers, so it is cheap even for millions of rows.
    """
    out = Path(out)
    done = completed_shards(out)
    expected = set(shard_ranges(n, shard_size))
    if done != expected:
        raise GenerateError(f"{out}: shards {sorted(done ^ expected)[:5]} differ from the expected tiling of [0, {n})")
    rows = 0
    for start, end in sorted(done):
        fp = out / f"shard-{start:09d}-{end:09d}.parquet"
        got = pq.ParquetFile(fp).metadata.num_rows
        if got != end - start:
            raise GenerateError(f"{fp} holds {got} rows, expected {end - start}")
        rows += got
    return rows


def run_with_resume(cfg: GenerateConfig, max_attempts: int, progress: bool):
    """Run ``generate`` and re-run it after a failure; settings errors (caught by ``validate``) are not retried."""
    validate(cfg)
    for attempt in range(1, max_attempts + 1):
        try:
            return generate(cfg, progress=progress), attempt
        except Exception as exc:  # noqa: BLE001 -- node loss surfaces as many Ray exception types
            if attempt == max_attempts:
                raise
            print(
                f"[generate] attempt {attempt}/{max_attempts} failed ({type(exc).__name__}: {exc}); resuming",
                flush=True,
            )
    raise AssertionError("unreachable")


def main(job_cfg: GenerateJobConfig) -> dict:
    cfg = job_cfg.generate_config()
    summary, attempts = run_with_resume(cfg, job_cfg.max_attempts, job_cfg.progress)
    rows = check_output(cfg.out, cfg.n, cfg.shard_size)
    print(f"[generate] {summary.line()}", flush=True)
    return {
        "out": cfg.out,
        "images": rows,
        "generated": summary.generated,
        "skipped": summary.skipped,
        "attempts": attempts,
        "images_per_s": round(summary.images_per_s, 3),
        "summary": summary.line(),
    }


if __name__ == "__main__":
    sys.exit(_common.run_job("generate", GenerateJobConfig, main))
