"""The serve command: generators and a classifier over HTTP with Ray Serve, and the /ui playground."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command


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


COMMANDS = (Command("serve", f"{__name__}:ServeRun", f"{__name__}:run_serve"),)
