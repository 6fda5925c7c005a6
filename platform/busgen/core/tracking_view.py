"""Read an MLflow store back without a server: the runs as a text table, one run in detail, a static HTML page.

Why this exists: the platform depends on ``mlflow-skinny`` (logging and the client API),
which has no ``mlflow ui`` server, and the full ``mlflow`` package would downgrade our
pyarrow pin. ``MlflowClient`` reads every store kind (a ``file:`` folder, ``sqlite:``,
a server), so ``busgen runs`` works on a fresh machine with what is installed, and
``--html`` writes one self-contained page (inline CSS and SVG, no scripts, no network)
that opens in any browser and can be shared as a file. A team with a real MLflow server
sets ``MLFLOW_TRACKING_URI`` and uses its UI instead; the links printed then open there.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

from busgen.core import tracking

METRICS_IN_TABLE = 3  # metrics shown per run in the listing (the detail shows all)
CHART_W, CHART_H = 320, 90  # SVG chart size in the HTML page (pixels)


@dataclass
class RunRow:
    """One run as the viewer shows it (values copied out of MLflow's entities)."""

    experiment: str
    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: int | None
    parent_id: str | None
    link: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return (self.end_ms - self.start_ms) / 1000 if self.end_ms else None

    @property
    def started(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.start_ms / 1000))


def client(uri: str):
    """An ``MlflowClient`` on the store ``uri`` (file stores allowed, as when writing)."""
    tracking._allow_file_store(uri)
    from mlflow.tracking import MlflowClient  # lazy: MLflow imports slowly

    return MlflowClient(tracking_uri=uri)


def list_runs(
    uri: str, experiment: str | None = None, since_ms: int = 0, top_level: bool = True, limit: int | None = None
) -> list[RunRow]:
    """The store's runs, newest first: of ``experiment`` (all when None), started at or after ``since_ms``.

    ``top_level`` leaves out nested runs (Tune trials); they are listed under their parent in the detail.
    """
    c = client(uri)
    experiments = {e.experiment_id: e.name for e in c.search_experiments()}
    if experiment is not None:
        experiments = {k: v for k, v in experiments.items() if v == experiment}
        if not experiments:
            return []
    filters = [f"attributes.start_time >= {int(since_ms)}"] if since_ms else []
    if top_level:
        filters.append("tags.`mlflow.parentRunId` IS NULL")
    runs = c.search_runs(
        list(experiments),
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
        max_results=limit or 1000,
    )
    return [_row(uri, experiments, r) for r in runs]


def _row(uri: str, experiments: dict, run) -> RunRow:
    info, data = run.info, run.data
    return RunRow(
        experiment=experiments.get(info.experiment_id, info.experiment_id),
        run_id=info.run_id,
        name=info.run_name or "",
        status=info.status,
        start_ms=info.start_time or 0,
        end_ms=info.end_time,
        parent_id=data.tags.get("mlflow.parentRunId"),
        link=tracking.run_link(uri, info.experiment_id, info.run_id),
        metrics=dict(data.metrics),
        params=dict(data.params),
        tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
    )


def find_run(uri: str, ref: str) -> RunRow:
    """The run whose id starts with ``ref``, else the newest run named ``ref``.

    Raises:
        ValueError: no run, or an id prefix shared by several runs; the message says how to list them.
    """
    rows = list_runs(uri, top_level=False)
    by_id = [r for r in rows if r.run_id.startswith(ref)]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        raise ValueError(f"run id prefix {ref!r} matches {len(by_id)} runs in {uri}: give more characters")
    by_name = [r for r in rows if r.name == ref]
    if by_name:
        return by_name[0]  # newest first
    raise ValueError(f"no run {ref!r} in the store {uri}: `busgen runs` lists its runs (--tracking-uri for another)")


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged value of one metric, in step order."""
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def artifacts(uri: str, run_id: str) -> list[str]:
    """The run's artifact paths, top level and one folder down (enough to see what was kept)."""
    c, out = client(uri), []
    for a in c.list_artifacts(run_id):
        out.append(a.path + ("/" if a.is_dir else ""))
        if a.is_dir:
            out.extend(b.path + ("/" if b.is_dir else "") for b in c.list_artifacts(run_id, a.path))
    return out


def _number(v: float) -> str:
    return f"{v:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "running"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def render_table(rows: list[RunRow], uri: str) -> str:
    """The listing: one line per run (start, experiment, name, status, duration, a few metrics, id)."""
    if not rows:
        return f"no runs in {uri}"
    lines = [f"store: {uri}", f"{'started':<16}  {'experiment':<18} {'run':<22} {'status':<9} {'took':>7}  id"]
    for r in rows:
        lines.append(
            f"{r.started:<16}  {r.experiment[:18]:<18} {r.name[:22]:<22} {r.status:<9} {_duration(r.seconds):>7}  "
            f"{r.run_id[:8]}  " + " ".join(f"{k}={_number(v)}" for k, v in sorted(r.metrics.items())[:METRICS_IN_TABLE])
        )
    lines.append("details: busgen runs <id>   page: busgen runs --html runs.html")
    return "\n".join(lines)


def render_run(uri: str, run: RunRow) -> str:
    """One run in detail: status, link, params, every metric (last value and range over its steps), artifacts."""
    lines = [f"{run.experiment} / {run.name}  ({run.run_id})", f"status {run.status}, took {_duration(run.seconds)}"]
    lines += [f"  {k} = {v}" for k, v in sorted(run.tags.items())]
    lines.append("params:" if run.params else "params: none")
    lines += [f"  {k} = {v}" for k, v in sorted(run.params.items())]
    lines.append("metrics (last, min..max over steps):" if run.metrics else "metrics: none")
    for key in sorted(run.metrics):
        values = [v for _, v in metric_history(uri, run.run_id, key)]
        spread = f"  [{_number(min(values))}..{_number(max(values))}, {len(values)} steps]" if len(values) > 1 else ""
        lines.append(f"  {key} = {_number(run.metrics[key])}{spread}")
    children = [r for r in list_runs(uri, top_level=False) if r.parent_id == run.run_id]
    if children:
        lines.append(f"nested runs ({len(children)}):")
        lines += [f"  {c.run_id[:8]}  {c.name}  {c.status}" for c in children]
    lines.append("artifacts:" if (files := artifacts(uri, run.run_id)) else "artifacts: none")
    lines += [f"  {f}" for f in files]
    return "\n".join(lines)


def _svg_line(points: list[tuple[int, float]]) -> str:
    """A small inline SVG polyline of ``(step, value)`` points (no script, no external file)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (CHART_W - 10) / ((x1 - x0) or 1)
    sy = (CHART_H - 10) / ((y1 - y0) or 1)
    coords = " ".join(f"{5 + (x - x0) * sx:.1f},{CHART_H - 5 - (y - y0) * sy:.1f}" for x, y in points)
    return (
        f'<svg width="{CHART_W}" height="{CHART_H}" role="img" aria-label="metric history">'
        f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{coords}"/></svg>'
        f"<div class=range>steps {x0}..{x1}, {_number(y0)}..{_number(y1)}</div>"
    )


def _cells(values: list) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>"


def render_html(uri: str, rows: list[RunRow]) -> str:
    """A self-contained page: the run table, then per run its params, metrics (a chart per history), artifacts."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>BUSGen runs</title><style>"
        "body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
        ".range{color:#666;font-size:12px}section{margin-top:2em}</style></head><body>",
        f"<h1>BUSGen runs</h1><p>Store <code>{e(uri)}</code>, {len(rows)} runs, written "
        f"{e(time.strftime('%Y-%m-%d %H:%M'))} by <code>busgen runs --html</code>.</p>",
        "<table><tr><th>started</th><th>experiment</th><th>run</th><th>status</th><th>took</th><th>id</th></tr>",
    ]
    for r in rows:
        parts.append(
            f'<tr><td>{e(r.started)}</td><td>{e(r.experiment)}</td><td><a href="#{e(r.run_id)}">{e(r.name)}</a></td>'
            f"<td>{e(r.status)}</td><td>{e(_duration(r.seconds))}</td><td><code>{e(r.run_id[:8])}</code></td></tr>"
        )
    parts.append("</table>")
    for r in rows:
        parts.append(f'<section id="{e(r.run_id)}"><h2>{e(r.experiment)} / {e(r.name)}</h2>')
        parts.append(f"<p>{e(r.status)}, took {e(_duration(r.seconds))}; id <code>{e(r.run_id)}</code></p>")
        if r.metrics:
            parts.append("<table><tr><th>metric</th><th>last</th><th>history</th></tr>")
            for key in sorted(r.metrics):
                points = metric_history(uri, r.run_id, key)
                chart = _svg_line(points) if len(points) > 1 else ""
                parts.append(f"<tr><td>{e(key)}</td><td>{e(_number(r.metrics[key]))}</td><td>{chart}</td></tr>")
            parts.append("</table>")
        if r.params:
            parts.append("<details><summary>params</summary><table>")
            parts += [_cells([k, v]) for k, v in sorted(r.params.items())]
            parts.append("</table></details>")
        if files := artifacts(uri, r.run_id):
            parts.append("<p>artifacts: " + ", ".join(f"<code>{e(f)}</code>" for f in files) + "</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
