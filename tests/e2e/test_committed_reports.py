"""The committed reports under docs/results/ re-render byte for byte from their results.json.

Why: the renovation (and any later refactor) moves the code that renders reports, not the numbers in them. Each
committed report folder is copied to a temporary folder, its Markdown is deleted, the library renders it again from
the committed ``results.json`` alone, and the result must equal the committed Markdown exactly. A refactor that
changes a rounding, a column, a heading or a link in any committed report fails here; an intended change has to
re-render the committed report in the same commit, where it shows up in review.

The renderers, per report:

* ``busi_cpu``, ``recipes_busi_cpu``: ``busgen.eval.report.write_report(out, EvalResult.read(out))``
* ``multisite_cpu``: ``busgen.studies.multisite.report.write`` (config from ``busgen.studies.multisite.config``)
* ``privacy_tradeoff_busi_cpu``: ``busgen.studies.tradeoff.report.write_report(results, out)``

What a report folder alone does not hold is stood in for (with pytest's monkeypatch, so nothing outlives a test):

* the ``_Generated <local time>_`` line of ``busgen.data.report.Report`` is pinned to the committed stamp;
* ``write_report`` copies the generator's ``loss_curve.png`` from ``inputs.model`` (a folder outside the report):
  the folder's committed ``loss_curve.png`` stands in for it (or nothing, where none was committed);
* multi-site ``write`` takes the per-variant EvalResults of the run's work dir (not committed): ``rows_of`` returns
  the committed ``results.json`` rows, ``sample_grids`` the committed ``samples_<site>.png`` paths (drawing them
  reads the sites' images), and each site's domain (read from its dataset, not committed) is the site name, as in
  the committed run.

Nothing is written into the repository: every renderer writes into ``tmp_path``. PNGs are re-drawn but not compared
(their bytes depend on the matplotlib build); the Markdown that links them is.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT

RESULTS_ROOT = REPO_ROOT / "docs" / "results"


# ----------------------------------------------------------------------------- stand-ins


def pin_generated_stamp(monkeypatch, committed_md: str) -> None:
    """Make ``Report`` print the committed ``_Generated ..._`` stamp instead of the local time now."""
    import busgen.data.report as report_mod

    m = re.search(r"^_Generated (.+)_$", committed_md, re.MULTILINE)
    if m is None:
        return
    stamp, real_time = m.group(1), report_mod.time

    class PinnedTime:
        def strftime(self, fmt, *args):
            return stamp

        def __getattr__(self, name):
            return getattr(real_time, name)

    monkeypatch.setattr(report_mod, "time", PinnedTime())


# ----------------------------------------------------------------------------- renderers (one per report kind)


def render_eval_result(folder: Path, monkeypatch, tmp_path: Path) -> Path:
    """``write_report(out, EvalResult.read(out))``, the loss curve stood in for by the committed copy."""
    from busgen.eval import report
    from busgen.eval.results import EvalResult

    result = EvalResult.read(folder)
    generator = tmp_path / "generator"  # stands in for inputs.model, which is not part of the report folder
    generator.mkdir()
    if (folder / "loss_curve.png").is_file():
        shutil.copyfile(folder / "loss_curve.png", generator / "loss_curve.png")
    real_loss_curve = report._loss_curve
    monkeypatch.setattr(
        report, "_loss_curve", lambda rep, model, out: real_loss_curve(rep, str(generator) if model else None, out)
    )
    return Path(report.write_report(folder, result))


def render_multisite(folder: Path, monkeypatch, tmp_path: Path) -> Path:
    """``write(cfg, domains, counts, results, timings, seconds, pending)`` with the committed rows and grids."""
    from busgen.studies.multisite import report
    from busgen.studies.multisite.config import MultisiteConfig

    record = json.loads((folder / "results.json").read_text())
    cfg = MultisiteConfig.model_validate(record["config"])
    cfg = cfg.model_copy(update={"out": str(folder)})  # the record's out is the committed folder's absolute path
    domains = {site: site for site in cfg.sites}
    monkeypatch.setattr(report, "rows_of", lambda cfg_, results: record["rows"])
    monkeypatch.setattr(
        report,
        "sample_grids",
        lambda cfg_, domains_, results, out, per_row=8: [Path(out) / f"samples_{s}.png" for s in domains_],
    )
    summary = report.write(
        cfg, domains, record["train_counts"], [], record["timings"], record["seconds"], record.get("pending", [])
    )
    return Path(summary["report"])


def render_tradeoff(folder: Path, monkeypatch, tmp_path: Path) -> Path:
    """``write_report(json.loads(results.json), out)``."""
    from busgen.studies.tradeoff import report

    report.write_report(json.loads((folder / "results.json").read_text()), folder)
    return folder / "tradeoff.md"


# Every docs/results/<name>/ holding a results.json: (name, its Markdown report, the renderer).
REPORTS = [
    ("busi_cpu", "report.md", render_eval_result),
    ("multisite_cpu", "report.md", render_multisite),
    ("privacy_tradeoff_busi_cpu", "tradeoff.md", render_tradeoff),
    ("privacy_tradeoff_fixture", "tradeoff.md", render_tradeoff),
    ("recipes_busi_cpu", "report.md", render_eval_result),
]


# ----------------------------------------------------------------------------- tests


@pytest.fixture
def one_thread():
    """Plots and small numpy work only: one BLAS/OpenMP thread and one torch thread keep a shared CPU box free."""
    import torch  # imported by the renderers' modules anyway
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize(("name", "md_name", "render"), REPORTS, ids=[r[0] for r in REPORTS])
def test_committed_report_rerenders_identically(name, md_name, render, tmp_path, monkeypatch, one_thread):
    src = RESULTS_ROOT / name
    committed = (src / md_name).read_text()
    folder = tmp_path / name
    shutil.copytree(src, folder)
    (folder / md_name).unlink()
    monkeypatch.setenv("MPLBACKEND", "Agg")
    pin_generated_stamp(monkeypatch, committed)

    path = render(folder, monkeypatch, tmp_path)

    assert path == folder / md_name, f"{name}: the renderer wrote {path}, not {md_name} in the report folder"
    rerendered = path.read_text()
    assert rerendered == committed, (
        f"docs/results/{name}/{md_name} no longer re-renders byte for byte from its results.json; if the change is "
        "intended, re-render the committed report in the same commit"
    )


def test_every_committed_report_is_covered():
    """A report folder committed under docs/results/ with a results.json must join REPORTS above."""
    committed = sorted(p.parent.name for p in RESULTS_ROOT.glob("*/results.json"))
    assert committed, f"no committed report under {RESULTS_ROOT}"
    assert sorted(r[0] for r in REPORTS) == committed
