"""Reader study (the paper's visual Turing test), made repeatable: items, answers in Parquet, scores.

Each reader gets the same number of real and synthetic images in a shuffled order
that depends only on the reader's id and the set sizes, so a session can be resumed
and re-run. Answers are one Parquet file per (reader, item) under ``<study_dir>/answers/``,
and a crash loses at most the answer being written.

Readers are token-bound: the study owner creates them (``add_readers``), each gets an id
(``reader-01``, ...) and a random token, sent as a link; the server keeps only the token's
sha256 (``<study_dir>/readers/<id>.json``). A reader cannot type a name, so cannot answer
as someone else or open another reader's list. The token opens the reader's own items and
nothing else of the API: a reader who also held the API token could browse the gallery,
which is the study's synthetic pool.

Each answer is a call (real or synthetic) and a confidence from 1 (guessing) to 5
(certain); the AUC ranks answers by the signed confidence (a 10-level rating scale, the
usual design of observer studies), so "unsure" answers count less than certain ones.

A reader must not be able to learn the truth and then correct an answer, so:

* the first answer to an item is final: a later one is refused (409), atomically (the
  file is linked into place, which fails if it exists, so two racing answers cannot both win);
* scores (which reveal which items were synthetic) go only to the study owner, who sends
  the owner token, or to anyone once the study is closed (``closed.json`` in the study
  folder, written by ``close``); a closed study takes no more answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from busgen.serve.errors import RequestError

READER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ANSWER_SCHEMA = pa.schema(
    [
        ("reader", pa.string()),
        ("item", pa.int32()),
        ("kind", pa.string()),  # truth: real | synthetic
        ("row", pa.int32()),  # row of the real (reference) or synthetic (gallery) set
        ("label", pa.string()),  # truth: the row's class
        ("says_synthetic", pa.bool_()),
        ("says_label", pa.string()),
        ("answered_at", pa.float64()),
        ("confidence", pa.int8()),  # 1 (guessing) .. 5 (certain); null in answers stored before the scale
    ]
)
READERS_DIR = "readers"
READER_TOKEN_BYTES = 24  # 192 random bits: a link cannot be guessed
MAX_READERS = 999


def check_reader(reader: str) -> str:
    if not READER_RE.match(reader or ""):
        raise RequestError(422, "reader must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return reader


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_readers(study_dir: str | Path, count: int) -> list[dict]:
    """Create ``count`` readers: ``[{"reader": "reader-07", "token": ...}]``; only the tokens' sha256 are stored.

    Ids are numbered on from the existing ones; each file is created exclusively, so two owners adding
    readers at once never share an id. The tokens are returned once and cannot be recovered.
    """
    folder = Path(study_dir) / READERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    out, number = [], len(list(folder.glob("reader-*.json")))
    while len(out) < count:
        number += 1
        if number > MAX_READERS:
            raise RequestError(409, f"error: this study has reached {MAX_READERS} readers; start a new study_dir")
        reader, token = f"reader-{number:02d}", secrets.token_urlsafe(READER_TOKEN_BYTES)
        record = {"reader": reader, "sha256": token_sha256(token), "created_at": time.time()}
        try:
            with open(folder / f"{reader}.json", "x") as f:  # exclusive: an id is never handed out twice
                json.dump(record, f)
        except FileExistsError:
            continue
        out.append({"reader": reader, "token": token})
    return out


def load_readers(study_dir: str | Path) -> dict[str, str]:
    """Token sha256 -> reader id, for every reader of the study."""
    out = {}
    for fp in sorted((Path(study_dir) / READERS_DIR).glob("reader-*.json")):
        record = json.loads(fp.read_text())
        out[record["sha256"]] = record["reader"]
    return out


def plan(reader: str, n_items: int, n_real: int, n_synthetic: int) -> list[tuple[str, int]]:
    """The reader's items as (kind, row): half real, half synthetic, shuffled by a seed from the reader's id."""
    seed = int.from_bytes(hashlib.sha256(reader.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    half = min(n_items // 2, n_real, n_synthetic)
    if half == 0:
        raise RequestError(503, "the reader study needs both a reference set and a gallery with images")
    items = [("real", int(r)) for r in rng.choice(n_real, half, replace=False)]
    items += [("synthetic", int(r)) for r in rng.choice(n_synthetic, half, replace=False)]
    order = rng.permutation(len(items))
    return [items[k] for k in order]


CLOSED_MARKER = "closed.json"


def save_answer(study_dir: str | Path, record: dict) -> Path:
    """Write one answer as ``answers/<reader>/<item>.parquet``; the first answer to an item is final.

    Raises:
        RequestError: 409 when the reader already answered this item, or the study is closed.
    """
    if is_closed(study_dir):
        raise RequestError(409, "error: the study is closed and takes no more answers; ask its owner to reopen it")
    out = Path(study_dir) / "answers" / record["reader"]
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{record['item']:05d}.parquet"
    tmp = out / f".{final.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    row = {**record, "answered_at": time.time()}
    pq.write_table(pa.Table.from_pylist([row], schema=ANSWER_SCHEMA), tmp)
    try:
        os.link(tmp, final)  # atomic and exclusive: fails when an answer is already there
    except FileExistsError:
        raise RequestError(
            409,
            f"error: reader {record['reader']!r} already answered item {record['item']}; "
            "the first answer is final: go on with the next item",
        ) from None
    finally:
        tmp.unlink()
    return final


def is_closed(study_dir: str | Path) -> bool:
    return (Path(study_dir) / CLOSED_MARKER).is_file()


def close(study_dir: str | Path) -> dict:
    """Close the study: no more answers, and the scores are shown to every client. Idempotent."""
    fp = Path(study_dir) / CLOSED_MARKER
    if not fp.is_file():
        fp.parent.mkdir(parents=True, exist_ok=True)
        fp.write_text(json.dumps({"closed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    return {"closed": True}


def load_answers(study_dir: str | Path) -> pa.Table:
    files = sorted((Path(study_dir) / "answers").glob("*/*.parquet"))
    if not files:
        return ANSWER_SCHEMA.empty_table()
    return pa.concat_tables([_conform(pq.read_table(f)) for f in files])


def _conform(table: pa.Table) -> pa.Table:
    """An answer file in ``ANSWER_SCHEMA``: columns added since it was written come back as nulls."""
    n = table.num_rows
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type) for f in ANSWER_SCHEMA]
    return pa.Table.from_arrays(cols, schema=ANSWER_SCHEMA)


def answered_items(study_dir: str | Path, reader: str) -> set[int]:
    """Items the reader has answered (file names, no Parquet read): where a resumed session goes on."""
    return {int(fp.stem) for fp in (Path(study_dir) / "answers" / reader).glob("[0-9]*.parquet")}


def auc(truth: list[bool], score: list[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None without both classes."""
    t, s = np.asarray(truth, bool), np.asarray(score, float)
    pos, neg = s[t], s[~t]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def rating(row: dict) -> int:
    """The answer on one axis: +confidence for "synthetic", -confidence for "real" (no confidence: +-1)."""
    return (row.get("confidence") or 1) * (1 if row["says_synthetic"] else -1)


def scores(rows: list[dict]) -> dict:
    """Accuracy of real/synthetic calls, of class calls, mean confidence, and the AUC of telling synthetic from real.

    The AUC ranks by ``rating`` (call and confidence together): 0.5 = readers cannot tell.
    """
    truth = [r["kind"] == "synthetic" for r in rows]
    said = [bool(r["says_synthetic"]) for r in rows]
    labelled = [r for r in rows if r["says_label"]]
    confident = [r["confidence"] for r in rows if r.get("confidence")]
    return {
        "answered": len(rows),
        "accuracy": round(float(np.mean([a == b for a, b in zip(truth, said)])), 4) if rows else None,
        "label_accuracy": round(float(np.mean([r["says_label"] == r["label"] for r in labelled])), 4)
        if labelled
        else None,
        "mean_confidence": round(float(np.mean(confident)), 2) if confident else None,
        "auc": auc(truth, [rating(r) for r in rows]),
    }


def results(study_dir: str | Path) -> dict:
    """Per-reader and pooled scores. AUC 0.5 means readers cannot tell synthetic from real."""
    rows = load_answers(study_dir).to_pylist()
    readers = sorted({r["reader"] for r in rows} | set(load_readers(study_dir).values()))  # invited, none yet too
    return {
        "readers": {name: scores([r for r in rows if r["reader"] == name]) for name in readers},
        "all": scores(rows),
    }
