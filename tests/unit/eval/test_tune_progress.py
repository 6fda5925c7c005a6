"""The utility stage of evaluate is no longer silent: every finished Tune trial prints done/running/total and an ETA."""

from busgen.eval.progress import fmt_seconds, progress_line


def test_progress_line_counts_and_estimates():
    line = progress_line("suite-utility", done=3, total=12, running=2, elapsed=90.0, status="ok")
    assert line == "[suite-utility] trial 3/12 done (ok) | 2 running, 7 pending | elapsed 1m30s | ETA 4m30s"
    assert progress_line("x", 4, 4, 0, 10.0, "error").endswith("ETA 0s")
    assert fmt_seconds(3725) == "1h02m"
