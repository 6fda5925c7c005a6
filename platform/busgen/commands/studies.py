"""Study commands: the few-shot sweep, the multi-site protocol and CPSample's privacy-utility trade-off."""

from __future__ import annotations

from busgen.commands.command import Command


def run_few_shot(cfg) -> dict:
    from busgen.core.raylocal import init_ray
    from busgen.studies.fewshot import run_few_shot as run

    init_ray()
    rows = run(cfg)
    return {f"domain_score_k{r['shots']}": r["domain_score"] for r in rows} | {
        f"fid_k{r['shots']}": r["fid"] for r in rows
    }


def run_multisite(cfg) -> dict:
    from busgen.studies.multisite.runner import run_multisite as run

    result = run(cfg)
    return result | {"summary": f"{result['rows']} rows in {result['seconds']} s\nreport: {result['report']}"}


_HERE = __name__
COMMANDS = (
    Command(
        "few-shot",
        "busgen.studies.fewshot:FewShotConfig",
        f"{_HERE}:run_few_shot",
        location_fields=("base", "target_dir", "reference_dir", "out", "storage_path"),
    ),
    Command(
        "multisite",
        "busgen.studies.multisite.config:MultisiteConfig",
        f"{_HERE}:run_multisite",
        location_fields=("out", "work_dir", "joint_dir"),
    ),
    Command(
        "tradeoff",
        "busgen.studies.tradeoff.run:TradeoffConfig",
        "busgen.studies.tradeoff.study:run_study",
        location_fields=("model", "data_dir", "out"),
    ),
)
