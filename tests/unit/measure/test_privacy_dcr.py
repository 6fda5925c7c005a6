"""DCR membership inference: members a generator copied sit closer to the shared set than non-members."""

from __future__ import annotations

import numpy as np

from busgen.data.phantom import make_phantom_arrays
from busgen.measure.privacy.dcr import closest_record_distance, dcr_membership


def test_copied_members_are_found_and_fresh_samples_give_chance():
    members, _, _ = make_phantom_arrays(40, 32, seed=0)
    non_members, _, _ = make_phantom_arrays(40, 32, seed=1)
    fresh, _, _ = make_phantom_arrays(80, 32, seed=2)
    leaky = np.concatenate([members[:30], fresh[:50]])  # the "generator" hands back 30 of 40 members
    hit = dcr_membership(members, non_members, leaky)["pixel"]
    safe = dcr_membership(members, non_members, fresh)["pixel"]
    assert hit["auc"] > 0.8 and hit["tpr_at_1pct_fpr"] > 0.5
    assert abs(safe["auc"] - 0.5) < 0.15
    assert closest_record_distance(members[:3], leaky).max() < 1e-3  # exact copies: distance 0
