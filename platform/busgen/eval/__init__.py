"""Evaluation: is synthetic data useful, faithful, diverse and safe to share?

suites (the YAML spec) -> runner (``run_suite``: inputs, then utility / parts) -> results
(``EvalResult``, ``results.json``) -> report (``report.md``, plots). Tune grids of every kind
run through sweep.run_trials; trials holds the trial functions; metrics, fidelity,
classify and privacy/ are the measurement libraries they use.
"""
