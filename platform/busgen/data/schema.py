"""Column names and constants shared by every stage that reads or writes Parquet.

Ingested datasets and synthetic sets share one row layout so that classifiers
train on real, synthetic or mixed data through the same reader.
"""

from __future__ import annotations

import re

import pyarrow as pa

SCHEMA_VERSION = 1

# Ingested (real) rows
IMAGE = "image"  # PNG bytes, 8-bit grayscale, size x size
MASK = "mask"  # PNG bytes (0/255) or null
BOX = "box"  # [x0, y0, x1, y1] normalised to [0, 1] in the stored image, or null
LABEL = "label"  # class name (str)
DOMAIN = "domain"  # device / site / dataset id (str)
SPLIT = "split"  # train | val | test
SOURCE = "source"  # path of the original file, relative to the ingest source (or its salted hash, see redact_paths)
SHA256 = "sha256"  # sha256 of the original file bytes
ORIG_WIDTH = "orig_width"
ORIG_HEIGHT = "orig_height"

# Extra columns of synthetic rows
INDEX = "index"
SEED = "seed"
MODEL_ID = "model_id"
SAMPLER = "sampler"
STEPS = "steps"
GUIDANCE = "guidance"
CREATED_AT = "created_at"

SPLITS = ("train", "val", "test")
DATASET_JSON = "dataset.json"
QUARANTINE_CSV = "quarantine.csv"
DUPLICATES_CSV = "duplicates.csv"
QUARANTINE_COLUMNS = ("source", "reason", "label", "error_type")
DUPLICATE_COLUMNS = ("source", "duplicate_of", "label", "kind")
UNKNOWN_DOMAIN = "unknown"

# Labels become folder names on export and keys in reports, so they must not be
# able to name a path: no separators, no leading dot, bounded length.
SAFE_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_safe_label(label: str) -> bool:
    """True when ``label`` can be used as a single folder name (letters, digits, ``_ . -``; 1-64 chars)."""
    return bool(SAFE_LABEL_RE.match(label)) and ".." not in label


INGEST_SCHEMA = pa.schema(
    [
        (IMAGE, pa.binary()),
        (MASK, pa.binary()),
        (BOX, pa.list_(pa.float32())),
        (LABEL, pa.string()),
        (DOMAIN, pa.string()),
        (SPLIT, pa.string()),
        (SOURCE, pa.string()),
        (SHA256, pa.string()),
        (ORIG_WIDTH, pa.int32()),
        (ORIG_HEIGHT, pa.int32()),
    ]
)
