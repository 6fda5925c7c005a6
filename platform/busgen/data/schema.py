"""Column names and constants shared by every stage that reads or writes Parquet.

Ingested datasets and synthetic sets share one row layout so that classifiers
train on real, synthetic or mixed data through the same reader.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# Ingested (real) rows
IMAGE = "image"  # PNG bytes, 8-bit grayscale, size x size
MASK = "mask"  # PNG bytes (0/255) or null
BOX = "box"  # [x0, y0, x1, y1] normalised to [0, 1] in the stored image, or null
LABEL = "label"  # class name (str)
DOMAIN = "domain"  # device / site / dataset id (str)
SPLIT = "split"  # train | val | test
SOURCE = "source"  # path of the original file, relative to the ingest source
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
UNKNOWN_DOMAIN = "unknown"

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
