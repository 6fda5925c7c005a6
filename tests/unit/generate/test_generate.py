"""Synthetic generation: exact counts and ratios, determinism, resume, exactly-once, clear refusals."""

from busgen.generate.shards import (
    RowPlan,
    exact_counts,
)


def test_row_plan_gives_exact_counts_and_is_pure():
    assert exact_counts({"benign": 0.5, "malignant": 0.5}, 201) in (
        {"benign": 101, "malignant": 100},
        {"benign": 100, "malignant": 101},
    )
    plan = RowPlan.build(1000, 3, {"a": 0.7, "b": 0.2, "c": 0.1}, None)
    labels = [plan.row(i)[0] for i in range(1000)]
    assert {k: labels.count(k) for k in "abc"} == {"a": 700, "b": 200, "c": 100}
    assert plan.row(123) == RowPlan.build(1000, 3, {"a": 0.7, "b": 0.2, "c": 0.1}, None).row(123)
    assert len({plan.row(i)[2] for i in range(1000)}) == 1000, "every image has its own seed"
    assert labels[:20] != sorted(labels[:20]), "classes are interleaved, not in blocks"
