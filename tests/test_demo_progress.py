"""`make demo` shows where it is (one start and one end line per stage, with elapsed time) and its report
links every MLflow run of the demo's store."""

import re

from busgen import demo
from busgen.core import tracking


def test_each_stage_prints_its_end_with_elapsed_and_total(capsys):
    timings = {}
    t = demo._stage("ingest")
    demo._done(timings, "ingest", t - 2.0)
    t = demo._stage("pretrain (Ray Train)")
    demo._done(timings, "pretrain", t - 3.0)
    out = capsys.readouterr().out
    assert "=== ingest ===" in out and "=== pretrain (Ray Train) ===" in out
    done = re.findall(r"=== (\w+) done in ([\d.]+)s \(demo total ([\d.]+)s\) ===", out)
    assert [d[0] for d in done] == ["ingest", "pretrain"]
    assert float(done[1][2]) >= float(done[0][2]) + 3.0


def test_report_rows_link_each_top_level_run_of_the_store(tmp_path):
    uri = tracking.default_uri(tmp_path)
    with tracking.start_run(True, uri, tmp_path, "busgen-pretrain", "demo-1") as pre:
        pre.log_metrics({"loss": 0.5})
    with tracking.start_run(True, uri, tmp_path, "busgen-evaluate", "demo") as suite:
        suite.child("trial-0").end()
    rows = demo.run_links(uri)
    assert [r[:3] for r in rows] == [["busgen-pretrain", "demo-1", "FINISHED"], ["busgen-evaluate", "demo", "FINISHED"]]
    assert [r[3] for r in rows] == [pre.link(), suite.link()], "nested trial runs are reached from the suite run"
