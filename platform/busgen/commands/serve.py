"""The serve command: generators and a classifier over HTTP with Ray Serve, and the /ui playground."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from busgen.commands.command import Command

DEPLOYMENTS = ("generator", "classifier", "ingress", "data")  # what --num-cpus can name


class ServeRun(BaseModel):
    """Serve generators and a classifier over HTTP with Ray Serve (token from $BUSGEN_API_TOKEN)."""

    model_config = ConfigDict(extra="forbid")

    generator: dict[str, str] = Field(
        description="model id -> model folder; the first is the default (CLI: --generator ID=DIR,...)"
    )
    classifier: str | None = Field(None, description="saved classifier folder")
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    insecure_local: bool = Field(False, description="disable bearer-token auth (loopback demos only)")
    reference: str | None = Field(
        None, description="training Parquet set: nearest-image check and real reader-study items (/ui)"
    )
    gallery: dict[str, str] = Field(
        {}, description="name -> generated Parquet set shown in the playground (CLI: --gallery NAME=DIR)"
    )
    study_dir: str | None = Field(None, description="reader-study answers are written here as Parquet")
    num_cpus: dict[str, float] = Field(
        {},
        description="CPUs per replica by deployment (generator, classifier, ingress, data); the others get a "
        "share that fits the machine (CLI: --num-cpus generator=1,classifier=0.5)",
    )
    num_gpus: dict[str, float] = Field(
        {}, description="GPUs per replica: generator, classifier (CLI: --num-gpus generator=1)"
    )
    ray_cpus: int | None = Field(None, ge=1, description="logical CPUs of the local Ray runtime (default: all cores)")

    @field_validator("num_cpus", "num_gpus")
    @classmethod
    def _known_deployments(cls, value: dict[str, float], info) -> dict[str, float]:
        known = DEPLOYMENTS if info.field_name == "num_cpus" else DEPLOYMENTS[:2]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"{info.field_name}: unknown deployment {', '.join(unknown)}; known: {', '.join(known)}")
        if any(v < 0 for v in value.values()):
            raise ValueError(f"{info.field_name}: figures must be >= 0, got {value}")
        return value


def deployment_overrides(cfg: ServeRun) -> dict[str, dict[str, float]]:
    """``ServeArgs`` overrides for the resources asked for: {"generator": {"num_cpus": 1, "num_gpus": 1}, ...}."""
    out: dict[str, dict[str, float]] = {}
    for key, figures in (("num_cpus", cfg.num_cpus), ("num_gpus", cfg.num_gpus)):
        for name, value in figures.items():
            out.setdefault(name, {})[key] = value
    return out


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
        ray_cpus=cfg.ray_cpus,
        **deployment_overrides(cfg),
    )
    return {"url": url}


COMMANDS = (Command("serve", f"{__name__}:ServeRun", f"{__name__}:run_serve"),)
