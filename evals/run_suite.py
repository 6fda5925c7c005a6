"""Run one evaluation suite in this process and print its headline metrics (thin wrapper over busgen.eval.runner).

    python evals/run_suite.py evals/suites/utility_ci.yaml real_dir=DATA model=MODEL out=REPORT [key=value ...]
    python evals/run_suite.py evals/suites/busi_full.yaml out=reports/busi_dry dry_run=true

For cluster runs with a results file and exit codes use ``jobs/evaluate.py``; for people, ``busgen evaluate``.
"""

from __future__ import annotations

import sys

from busgen.core.config import ConfigError, load_config
from busgen.eval.runner import run_suite
from busgen.eval.suites import SuiteConfig


def main(argv: list[str]) -> int:
    if not argv or "=" in argv[0]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        cfg = load_config(SuiteConfig, argv[0], argv[1:])
    except ConfigError as exc:
        print(f"bad suite config: {exc}", file=sys.stderr)
        return 2
    result = run_suite(cfg)
    print(result.metrics.model_dump_json(indent=2, exclude_none=True))
    return 1 if result.trials_failed() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
