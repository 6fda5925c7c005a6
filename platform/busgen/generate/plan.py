"""Row conditions: pure functions of (settings, i), so generation is deterministic and resumable.

Row i's class, domain and per-image seed depend only on (n, seed, ratios, i); nothing
depends on actor count, scheduling or ``map_batches`` order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


def exact_counts(ratio: dict[str, float], n: int) -> dict[str, int]:
    """Largest-remainder rounding: counts that sum to n and follow the ratio as closely as integers can."""
    total = sum(ratio.values())
    raw = {k: n * v / total for k, v in ratio.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _affine_permutation(n: int, seed: int, salt: str) -> tuple[int, int]:
    """Parameters (a, b) of i -> (a*i + b) mod n, a bijection on [0, n): a scrambled order in O(1) memory."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{n}".encode()).digest()[:8], "little")
    a = (h | 1) % n or 1
    while math.gcd(a, n) != 1:
        a = (a + 1) % n or 1
    return a, (h >> 32) % n


def image_seed(seed: int, i: int) -> int:
    """Per-image seed from (run seed K, index i): independent streams for every image."""
    return int.from_bytes(hashlib.sha256(f"busgen:{seed}:{i}".encode()).digest()[:8], "little") & (2**62 - 1)


@dataclass(frozen=True)
class RowPlan:
    """Turns an index into its conditions; holds only O(#classes) state so it ships cheaply to actors."""

    n: int
    seed: int
    class_names: tuple[str, ...]
    class_bounds: tuple[int, ...]  # cumulative counts
    domain_names: tuple[str | None, ...]
    domain_bounds: tuple[int, ...]
    class_perm: tuple[int, int]
    domain_perm: tuple[int, int]

    @classmethod
    def build(
        cls, n: int, seed: int, class_ratio: dict[str, float], domain_ratio: dict[str, float] | None
    ) -> "RowPlan":
        classes = exact_counts(class_ratio, n)
        domains = exact_counts(domain_ratio, n) if domain_ratio else {None: n}
        return cls(
            n,
            seed,
            tuple(classes),
            tuple(np.cumsum(list(classes.values())).tolist()),
            tuple(domains),
            tuple(np.cumsum(list(domains.values())).tolist()),
            _affine_permutation(n, seed, "class"),
            _affine_permutation(n, seed, "domain"),
        )

    def _bucket(self, i: int, perm: tuple[int, int], bounds: tuple[int, ...]) -> int:
        j = (perm[0] * i + perm[1]) % self.n
        return next(k for k, b in enumerate(bounds) if j < b)

    def row(self, i: int) -> tuple[str, str | None, int]:
        """(class, domain or None, image seed) of row i."""
        label = self.class_names[self._bucket(i, self.class_perm, self.class_bounds)]
        domain = self.domain_names[self._bucket(i, self.domain_perm, self.domain_bounds)]
        return label, domain, image_seed(self.seed, i)


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """The tiling of rows [0, n) into shards of ``shard_size`` rows (the last one may be shorter)."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
