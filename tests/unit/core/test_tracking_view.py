"""`busgen runs` reads the shared tracking store back without an MLflow server: a listing, one run, an HTML page."""

from __future__ import annotations

import pytest

from busgen.commands.registry import command
from busgen.core import tracking, tracking_view


@pytest.fixture()
def store(tmp_path) -> str:
    """A store with a pretrain run (loss over 3 steps, an artifact), a generate run and an evaluate run with a trial."""
    uri = (tmp_path / "mlruns").as_uri()
    (tmp_path / "manifest.json").write_text("{}")
    with tracking.start_run(True, uri, "busgen-pretrain", "tiny <b>") as run:
        run.log_params({"lr": 3e-4, "max_steps": 3})
        for step, loss in enumerate((0.9, 0.5, 0.3), start=1):
            run.log_metrics({"loss": loss}, step=step)
        run.log_artifacts(tmp_path / "manifest.json", "model")
    with tracking.start_run(True, uri, "busgen-generate", "syn") as run:
        run.log_metrics({"images": 64, "images_per_s": 1.5})
    with tracking.start_run(True, uri, "busgen-evaluate", "suite") as run:
        run.child("utility real-seed0").end()
    return uri


def test_the_listing_shows_every_top_level_run_newest_first(store):
    rows = tracking_view.list_runs(store)
    assert [r.name for r in rows] == ["suite", "syn", "tiny <b>"]  # the nested trial is shown under its suite
    assert [r.name for r in tracking_view.list_runs(store, experiment="busgen-generate")] == ["syn"]
    text = tracking_view.render_table(rows, store)
    assert "busgen-pretrain" in text and "loss=0.3" in text and "images_per_s=1.5" in text


def test_one_run_in_detail_has_params_metric_range_artifacts_and_nested_runs(store):
    suite = tracking_view.find_run(store, "suite")
    assert "utility real-seed0" in tracking_view.render_run(store, suite)
    pretrain = tracking_view.find_run(store, "tiny <b>")
    assert tracking_view.find_run(store, pretrain.run_id[:10]).name == "tiny <b>"  # an id prefix works too
    text = tracking_view.render_run(store, pretrain)
    assert "lr = 0.0003" in text and "loss = 0.3  [0.3..0.9, 3 steps]" in text and "model/manifest.json" in text


def test_an_unknown_run_says_how_to_list_the_store(store):
    with pytest.raises(ValueError, match="`busgen runs` lists its runs"):
        tracking_view.find_run(store, "nope")


def test_the_html_page_is_self_contained_and_escaped(store):
    page = tracking_view.render_html(store, tracking_view.list_runs(store))
    assert "<script" not in page and "http" not in page  # opens offline, from a file
    assert "tiny &lt;b&gt;" in page and "tiny <b>" not in page
    assert page.count("<polyline") == 1  # the loss history (3 steps); single values get no chart


def test_the_command_lists_shows_and_writes_a_page(store, tmp_path):
    runs = command("runs")
    listing = runs.run(runs.config_class(tracking_uri=store))
    assert listing["runs"] == 3 and "syn" in listing["summary"]
    page = tmp_path / "page" / "runs.html"
    one = runs.run(runs.config_class(run="syn", tracking_uri=store, html=str(page)))
    assert "images = 64" in one["summary"] and page.read_text().count("<section") == 1


def test_a_store_not_yet_written_is_a_plain_message(tmp_path):
    runs = command("runs")
    result = runs.run(runs.config_class(tracking_uri=str(tmp_path / "none")))
    assert result["runs"] == 0 and "does not exist" in result["summary"]
