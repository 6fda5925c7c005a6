"""Generation that survives failures: re-run until every shard exists, then prove the tiling.

``busgen.generate.shards.generate`` writes each shard to a temporary file that is
renamed into place only when complete, and a run resumes by generating only the
missing shards. Ray Data restarts sampler actors and retries their shards when a node
dies; if a run still ends short (or raises), ``run_with_resume`` re-runs it up to
``max_attempts`` times, and each re-run finishes exactly the missing ranges.
``check_output`` then checks that the shards cover ``[0, n)`` exactly once.

An ``s3://``-style ``out`` is generated in a local staging folder (resumable like any
``--out``) and, once the tiling checks, published file by file with ``publish_output``
(temporary key, then move; ``manifest.json`` last: see ``busgen.core.remote``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from busgen.core import remote
from busgen.core.storage import is_uri
from busgen.generate.shards import GenerateConfig, GenerateError, generate, shard_ranges, validate
from busgen.generate.store import MANIFEST, QUARANTINE_DIR, scan_shards


class GenerateJobConfig(GenerateConfig):
    """Generate a synthetic image set with Ray Data: deterministic, resumable Parquet shards.

    ``GenerateConfig`` plus the failure policy of a whole run.
    """

    max_attempts: int = Field(
        3, ge=1, description="whole-run attempts; each re-run resumes from the shards already written"
    )
    progress: bool = Field(False, description="progress bar on stderr (noisy in `ray job logs`)")
    stage_dir: str | None = Field(
        None, description="local staging root for an s3://-style out (default ~/busgen_runs/staging)"
    )

    def resource_demand(self) -> dict[str, float]:
        """Ray resources one sampler actor asks for: some node type of ``cluster.yaml`` must offer them."""
        return {k: v for k, v in {"CPU": self.num_cpus, "GPU": self.num_gpus}.items() if v}

    def generate_config(self) -> GenerateConfig:
        """The library config; shards go to a POSIX path (a URI's staging folder: on a multi-node
        cluster, point ``stage_dir`` at a filesystem every node mounts)."""
        local = remote.local_dir(self.out, self.stage_dir)
        return GenerateConfig(**self.model_dump(exclude={"max_attempts", "progress", "stage_dir"}) | {"out": local})


def publish_output(job: GenerateJobConfig) -> list[str]:
    """Publish a URI ``out`` from its staging folder (shards first, ``manifest.json`` last); [] for a local out.

    Hidden files (the lock, temporary shards), the MLflow store and quarantined shards stay local.
    """
    if not is_uri(job.out):
        return []
    try:
        return remote.publish(job.generate_config().out, job.out, marker=MANIFEST, skip=("mlruns", QUARANTINE_DIR))
    except (OSError, ValueError) as exc:
        raise GenerateError(
            f"error: publishing to {job.out} failed ({exc}): re-run the same command to resume"
        ) from exc


def run_with_resume(job: GenerateJobConfig):
    """Run ``generate`` and re-run it after a failure; errors of settings or state are not retried.

    A ``ValueError`` (bad settings, a folder locked by another run, a model that does not
    match the shards already written) fails the same way on every attempt, so it is raised
    at once; anything else (a lost node, a killed actor) is retried from the shards written.

    Returns:
        (GenerateSummary of the last attempt, number of attempts).
    """
    cfg = job.generate_config()
    validate(cfg)
    for attempt in range(1, job.max_attempts + 1):
        try:
            return generate(cfg, progress=job.progress), attempt
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 -- node loss surfaces as many Ray exception types
            if attempt == job.max_attempts:
                raise
            print(f"[generate] attempt {attempt}/{job.max_attempts} failed ({type(exc).__name__}: {exc}); resuming")
    raise AssertionError("unreachable")


def check_output(out: str | Path, n: int, shard_size: int) -> int:
    """Rows in the shard files, after checking they tile ``[0, n)`` exactly (no gap, no overlap, full shards).

    Reads only Parquet footers, so it is cheap even for millions of rows (the run verified
    data pages when it resumed, or wrote them). Any other Parquet file a reader would see
    (a stray shard off the tiling) is an error naming it: re-running the generation moves
    it to ``_quarantine/``.
    """
    out = Path(out)
    expected = set(shard_ranges(n, shard_size))
    done, damaged = scan_shards(out, expected, verify_data=False)  # footers are read once, here
    if damaged:
        fp, problem = damaged[0]
        raise GenerateError(f"{fp}: {problem}: re-run the generation to regenerate it")
    if done != expected:
        raise GenerateError(f"{out}: shards {sorted(done ^ expected)[:5]} differ from the expected tiling of [0, {n})")
    return sum(end - start for start, end in done)
