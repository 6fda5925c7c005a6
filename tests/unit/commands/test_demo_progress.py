"""`make demo` shows where it is (one start and one end line per stage, with elapsed time) and its report
links every MLflow run of the demo's store."""

import re
import time

from busgen.commands import demo
from busgen.core import tracking
from busgen.core.timings import Timings


def test_each_stage_prints_its_end_with_elapsed_and_total(capsys):
    clock = Timings(tag="demo")
    with clock.stage("ingest"):
        time.sleep(0.2)
    with clock.stage("pretrain", "pretrain (Ray Train)"):
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "[demo] ingest ..." in out and "[demo] pretrain (Ray Train) ..." in out
    done = re.findall(r"\[demo\] (\w+) done in ([\d.]+) s \(demo total ([\d.]+) s\)", out)
    assert [d[0] for d in done] == ["ingest", "pretrain"]
    assert float(done[1][2]) >= float(done[0][2]) + 0.3 - 0.05


def test_a_persisted_record_keeps_the_stages_of_an_earlier_run(tmp_path):
    first = Timings(path=tmp_path / "timings.json")
    first.timed("pretrain", time.sleep, 0.1)
    again = Timings(path=tmp_path / "timings.json")
    again.timed("generate", lambda: None)
    assert set(again.seconds) == {"pretrain", "generate"} and again.seconds["pretrain"] >= 0.1


def test_report_rows_link_each_top_level_run_the_demo_started(tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    with tracking.start_run(True, uri, "busgen-generate", "earlier, not the demo's"):
        pass
    time.sleep(0.01)
    demo_start = int(time.time() * 1000)
    with tracking.start_run(True, uri, "busgen-pretrain", "demo-1") as pre:
        pre.log_metrics({"loss": 0.5})
    with tracking.start_run(True, uri, "busgen-evaluate", "demo") as suite:
        suite.child("trial-0").end()
    rows = demo.run_links(uri, since_ms=demo_start)
    assert [r[:3] for r in rows] == [["busgen-pretrain", "demo-1", "FINISHED"], ["busgen-evaluate", "demo", "FINISHED"]]
    assert [r[3] for r in rows] == [pre.link(), suite.link()], "nested trial runs are reached from the suite run"
