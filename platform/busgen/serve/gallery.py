"""Parquet image sets for the playground: read a generated (or ingested) set, filter it, page it.

Plain pyarrow, no Ray: the ``DataDeployment`` replica holds one ``ImageSet`` per
configured set. A set is a Parquet file or a folder of them (``busgen generate``
writes ``shard-*.parquet`` next to a JSON manifest, which is skipped).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from busgen.data import schema as S
from busgen.serve.errors import RequestError

MAX_ROWS = 20_000  # the playground pages through sets in memory; larger sets are sampled by the operator
# The box too: the playground draws it on the image (never on reader-study items, which carry no provenance).
PROVENANCE = (S.MODEL_ID, S.SEED, S.SAMPLER, S.STEPS, S.GUIDANCE, S.INDEX, S.BOX)
# Sent as text: `busgen generate` seeds run to 2^64, and JavaScript numbers hold integers exactly only to 2^53.
AS_TEXT = (S.SEED,)


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet files of a set: the file itself, or every ``*.parquet`` under a folder (hidden ones skipped)."""
    root = Path(path)
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))
    if not files:
        raise ValueError(f"no Parquet files in {root}: point the set at a `busgen generate` or `busgen ingest` output")
    return files


class ImageSet:
    """Rows of one Parquet set (image, label, domain and provenance where present), filtered and paged."""

    def __init__(self, path: str | Path, max_rows: int = MAX_ROWS):
        tables = [pq.read_table(f) for f in parquet_files(path)]
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        if S.IMAGE not in table.column_names:
            raise ValueError(f"{path} has no {S.IMAGE!r} column: not a BUSGen image set")
        self.table = table.slice(0, max_rows)
        cols = self.table.column_names
        self.images: list[bytes] = self.table.column(S.IMAGE).to_pylist()
        self.labels: list[str] = self._col(S.LABEL, "unknown")
        self.domains: list[str] = self._col(S.DOMAIN, S.UNKNOWN_DOMAIN)
        self.provenance = {c: self.table.column(c).to_pylist() for c in PROVENANCE if c in cols}
        for c in set(AS_TEXT) & set(self.provenance):
            self.provenance[c] = [None if v is None else str(v) for v in self.provenance[c]]
        if S.BOX in self.provenance:  # float32 in Parquet: 0.15 would read 0.15000000596
            self.provenance[S.BOX] = [None if b is None else [round(v, 4) for v in b] for b in self.provenance[S.BOX]]
        self.sources: list[str] = self._col(S.SOURCE, "")

    def _col(self, name: str, default: str) -> list[str]:
        if name not in self.table.column_names:
            return [default] * self.table.num_rows
        return [v if v is not None else default for v in self.table.column(name).to_pylist()]

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self, label: str | None = None, domain: str | None = None) -> list[int]:
        return [
            i
            for i in range(len(self))
            if (label is None or self.labels[i] == label) and (domain is None or self.domains[i] == domain)
        ]

    def item(self, i: int, with_provenance: bool = True) -> dict:
        out = {"row": i, "label": self.labels[i], "domain": self.domains[i]}
        if with_provenance:
            out |= {k: v[i] for k, v in self.provenance.items()}
        out["image"] = base64.b64encode(self.images[i]).decode("ascii")
        return out

    def page(self, label: str | None, domain: str | None, page: int, page_size: int) -> dict:
        """One page of the filtered rows, with the choices a filter can take (for the UI's drop-downs)."""
        rows = self.rows(label, domain)
        pages = max(1, -(-len(rows) // page_size))
        if page >= pages:
            raise RequestError(404, f"page {page} is past the last page ({pages - 1}) of {len(rows)} matching rows")
        chosen = rows[page * page_size : (page + 1) * page_size]
        return {
            "total": len(rows),
            "page": page,
            "pages": pages,
            "labels": sorted(set(self.labels)),
            "domains": sorted(set(self.domains)),
            "items": [self.item(i) for i in chosen],
        }
