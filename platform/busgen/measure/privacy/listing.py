"""The one way the audit and the share filter list a synthetic set: rows, decoded images and their ids.

The share filter used to list files on its own and shipped rows the audit never saw. Both
now take the same ``SyntheticSet`` (one ``read_table`` over the same files, in the same
order), so every row that can be shipped is a row that was audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busgen.data import schema
from busgen.data.dataset import decode_images, read_table


@dataclass
class SyntheticSet:
    table: object  # pyarrow.Table of every row, all columns
    images: np.ndarray  # uint8 (N, H, W), row order of ``table``
    ids: np.ndarray  # the ``index`` column, else read positions
    has_ids: bool


def read_set(path: str | Path) -> SyntheticSet:
    """Read a synthetic set once; the audit uses ``images``/``ids`` and the filter ``table``."""
    table = read_table(path)
    images = decode_images(table.column(schema.IMAGE).to_pylist())
    has_ids = schema.INDEX in table.column_names
    ids = np.asarray(table.column(schema.INDEX).to_pylist() if has_ids else range(table.num_rows))
    return SyntheticSet(table, images, ids, has_ids)
