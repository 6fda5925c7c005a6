"""Evaluation suite as a Ray job: utility / fidelity / privacy / sampler-steps report for one generator.

Submit to a cluster (paths on storage every node mounts; Tune trials write their artifacts there)::

    ray job submit --working-dir . --runtime-env-json '{"py_modules": ["platform/busgen"]}' -- \\
        python jobs/evaluate.py --config evals/suites/utility.yaml real_dir=/mnt/shared/data/busi64 \\
        model=/mnt/shared/models/pretrain out=/mnt/shared/reports/utility-run1 \\
        'resources_per_trial={CPU: 4, GPU: 1}' --results-fp /mnt/shared/results/evaluate-run1.json

or locally: ``python jobs/evaluate.py --config evals/suites/utility_ci.yaml real_dir=... model=... out=...``.

The suite spec is a `busgen.eval.suites.SuiteConfig`; unknown keys and invalid values fail
before any work starts (exit 2). The job prints one ``BUSGEN_JOB evaluate status=...``
line with the headline metrics, writes the report folder (``report.md``, PNGs,
``results.parquet``/``.csv``, ``results.json``) to ``out`` and exits non-zero when the
suite fails or any Tune trial failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `python jobs/x.py` puts jobs/, not the repo root, on sys.path

from busgen.eval.runner import run_suite  # noqa: E402
from busgen.eval.suites import SuiteConfig  # noqa: E402
from jobs import _common  # noqa: E402


def resolved(cfg: SuiteConfig) -> SuiteConfig:
    """Paths made absolute on the driver: Tune trials run in other working directories (and nodes)."""
    upd = {
        k: _common.resolve_location(getattr(cfg, k))
        for k in ("real_dir", "model", "synthetic_dir", "source", "out")
        if getattr(cfg, k)
    }
    return cfg.model_copy(update=upd)


def main(cfg: SuiteConfig) -> dict:
    result = run_suite(resolved(cfg), run_id=_common.run_id())
    report = str(Path(cfg.out).resolve() / "report.md")
    if failed := result.trials_failed():
        raise RuntimeError(f"{failed} Tune trial(s) failed; see {report}")
    return {**result.metrics.flat(), "report": report}


if __name__ == "__main__":
    sys.exit(_common.run_job("evaluate", SuiteConfig, main))
