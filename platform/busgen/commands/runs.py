"""``busgen runs``: the viewer of the tracking store every command writes to (no MLflow server needed).

``busgen runs`` lists the runs, ``busgen runs ID`` (an id prefix or a run name) shows one
in detail, ``busgen runs --html runs.html`` writes a static page of them all. The store is
the commands' own: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``runs/mlruns``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command


class RunsConfig(BaseModel):
    """List the MLflow runs of the tracking store, show one, or write them as a static HTML page."""

    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, description="a run id (or its first characters) or run name to show in detail")
    experiment: str | None = Field(None, description="only runs of this experiment (e.g. busgen-pretrain)")
    limit: int = Field(20, ge=1, description="newest runs listed")
    html: str | None = Field(None, description="also write the listed runs as one self-contained HTML page here")
    tracking_uri: str | None = Field(
        None, description="MLflow server or store; None = $MLFLOW_TRACKING_URI, else runs/mlruns (one store for all)"
    )


def show_runs(cfg: RunsConfig) -> dict:
    """The listing (or one run's detail) as the summary; ``html`` the page's path when written."""
    from pathlib import Path

    from busgen.core import tracking, tracking_view

    uri = tracking.resolve_uri(cfg.tracking_uri)
    folder = tracking.local_path(uri)
    if folder is not None and not folder.exists():
        return {"runs": 0, "summary": f"no runs yet: the store {uri} does not exist (a command creates it)"}
    if cfg.run:
        run = tracking_view.find_run(uri, cfg.run)
        rows, text = [run], tracking_view.render_run(uri, run)
    else:
        rows = tracking_view.list_runs(uri, cfg.experiment, limit=cfg.limit)
        text = tracking_view.render_table(rows, uri)
    result: dict = {"runs": len(rows)}
    if cfg.html:
        page = Path(cfg.html)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(tracking_view.render_html(uri, rows))
        result["html"] = str(page)
        text += f"\npage: {page}"
    return result | {"summary": text}


COMMANDS = (Command("runs", f"{__name__}:RunsConfig", f"{__name__}:show_runs", ("run",), ("html",)),)
