"""Tracking and progress of a training run: the MLflow run, the ETA, the loss history and its PNG.

The driver opens the MLflow run (params = the resolved config) before ``fit`` and passes
its ``ref`` in the loop config; rank 0 logs metrics per log step into it; after the
export the driver adds the loss curve and the model folder as artifacts and closes it.
The loss history travels in the reported metrics (``loss_history``, thinned to
``HISTORY_POINTS``), so the curve needs no tracking store: it covers the steps since the
last (re)start of the run.
"""

from __future__ import annotations

from pathlib import Path

from busgen.core import tracking

HISTORY_POINTS = 400  # points kept of the loss curve (every other point dropped when full)
LOSS_CURVE_PNG = "loss_curve.png"
MODEL_ARTIFACT = "model"


def open_run(cfg, kind: str, params: dict | None = None) -> tracking.Run:
    """Open the MLflow run of a pretrain/adapt ``cfg`` (experiment ``busgen-<kind>``) and log its params."""
    run_name = cfg.run_name or kind
    run = tracking.start_run(
        cfg.tracking,
        cfg.tracking_uri,
        experiment=f"busgen-{kind}",
        run_name=run_name,
        tags={"busgen.operation": kind},
    )
    run.log_params(params if params is not None else cfg.model_dump(mode="json"))
    if run.enabled:
        print(f"[{kind}] tracking: {run.link()}", flush=True)
    return run


def remember(history: list, step: int, loss: float) -> list:
    """Append ``(step, loss)``; when full, keep every other point so the whole run still fits."""
    history.append([int(step), float(loss)])
    if len(history) > HISTORY_POINTS:
        del history[1::2]
    return history


def eta_text(step: int, max_steps: int, start_step: int, seconds: float) -> str:
    """``ETA 3m12s`` from the mean step time since (re)start; empty before the first measured step."""
    done = step - start_step
    if done <= 0 or seconds <= 0:
        return ""
    left = (max_steps - step) * seconds / done
    m, s = divmod(int(round(left)), 60)
    h, m = divmod(m, 60)
    return f"ETA {h}h{m:02d}m" if h else f"ETA {m}m{s:02d}s"


def plot_loss_curve(history: list, path: str | Path, title: str = "training loss") -> Path | None:
    """Write the loss curve (smoothed loss vs step) as a PNG; None when there are fewer than two points."""
    if not history or len(history) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*history)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(steps, losses, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (EMA 0.9)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def finish(run: tracking.Run, out: str | Path, metrics: dict | None) -> None:
    """After the export: loss-curve PNG into the model folder, the folder as an artifact (rank 0 logged the metrics).

    The caller ends the run (``with open_run(...) as run``), FAILED when anything raised.
    """
    out = Path(out)
    history = (metrics or {}).get("loss_history") or []
    plot_loss_curve(history, out / LOSS_CURVE_PNG)
    run.log_artifacts(out, MODEL_ARTIFACT)
