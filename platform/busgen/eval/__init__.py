"""Evaluation suites: is synthetic data useful, faithful, diverse and safe to share?

suites (the YAML spec) -> runner (``run_suite``: inputs reused or built by `build`, then the
utility/ part and the feature-space parts) -> results (``EvalResult``, ``results.json``) ->
report (``report.md``, plots). Tune grids of every kind run through sweep.run_trials; trials
holds the trial functions. The numbers themselves come from `busgen.measure`; share (the
share filter) is a command of its own built on the same measurements.
"""
