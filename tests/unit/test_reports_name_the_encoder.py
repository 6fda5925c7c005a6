"""Every FID/KID the project publishes says which feature space measured it.

A committed Markdown report under docs/results/ that prints FID or KID must carry a
``Reference encoder:`` line: the frozen encoder's version and hash, or an explicit
``none`` for numbers from the old instrument (per-run features, not comparable).
The report writers add the line themselves (`busgen.eval.report.fidelity_section`
refuses a new result without the encoder's identity); this test keeps hand-edited
READMEs and regenerated reports honest too.
"""

from __future__ import annotations

import re

import pytest
from helpers.paths import REPO_ROOT

from busgen.measure.reference import REFERENCE_VERSION

RESULTS = REPO_ROOT / "docs" / "results"
MENTIONS = re.compile(r"\b(FID|KID)\b")
LABEL = re.compile(r"Reference encoder: \*{0,2}(none|" + re.escape(REFERENCE_VERSION) + r" \(sha256 [0-9a-f]{12}\))")

REPORTS = sorted(p for p in RESULTS.rglob("*.md") if MENTIONS.search(p.read_text()))


@pytest.mark.parametrize("path", REPORTS, ids=[str(p.relative_to(RESULTS)) for p in REPORTS])
def test_every_committed_fid_or_kid_names_its_encoder(path):
    assert LABEL.search(path.read_text()), (
        f"{path.relative_to(REPO_ROOT)} prints FID/KID without a 'Reference encoder: {REFERENCE_VERSION} "
        "(sha256 ...)' line (or 'Reference encoder: none' for old-instrument numbers)"
    )


def test_a_new_fidelity_result_without_the_encoder_is_not_reported(tmp_path):
    from busgen.eval.report import Report, fidelity_section
    from busgen.eval.results import Detector, FidelityResult, SetMetrics

    m = SetMetrics(n_real=10, n_synthetic=10, fid=1.0, kid=0.1)
    fresh = FidelityResult(
        overall=m, per_class={}, real_vs_real=m, detector=Detector(auc=0.5, n_real=10, n_synthetic=10), legacy=False
    )
    with pytest.raises(ValueError, match="reference encoder"):
        fidelity_section(Report(tmp_path, "t"), fresh, tmp_path)
