"""``DataDeployment``: the playground's data side (nearest training image, galleries, reader study).

One small replica holds the reference (training) set, the generated galleries and
the study folder, so the ingress stays a thin validator and the answers have a single
writer. Every part is optional: a route whose data is not configured answers 503.
"""

from __future__ import annotations

import asyncio

from ray import serve

from busgen.serve import study
from busgen.serve.errors import RequestError
from busgen.serve.gallery import ImageSet
from busgen.serve.nearest import NearestIndex


@serve.deployment(name="DataDeployment", max_ongoing_requests=16)
class DataDeployment:
    def __init__(self, reference: str | None, galleries: dict[str, str], study_dir: str | None, study_items: int):
        self.reference = ImageSet(reference) if reference else None
        self.index = None
        if self.reference is not None:
            sources = [s or f"row {i}" for i, s in enumerate(self.reference.sources)]
            self.index = NearestIndex(self.reference.images, sources)
        self.galleries = {name: ImageSet(path) for name, path in galleries.items()}
        self.study_dir, self.study_items = study_dir, study_items
        self.readers: dict[str, str] = {}  # reader token sha256 -> reader id, reloaded on a miss

    async def ready(self) -> dict:
        return {"reference": len(self.reference or []), "galleries": {k: len(v) for k, v in self.galleries.items()}}

    async def nearest(self, pngs: list[bytes]) -> dict | None:
        """Nearest reference image per PNG (``matches``) and its yardstick (``metric``); None without a reference."""
        if self.index is None:
            return None
        return {"matches": await asyncio.to_thread(self.index.query, pngs), "metric": self.index.describe()}

    async def gallery(self, name: str, label: str | None, domain: str | None, page: int, page_size: int) -> dict:
        if name not in self.galleries:
            raise RequestError(404, f"unknown gallery {name!r}; available galleries: {sorted(self.galleries)}")
        return self.galleries[name].page(label, domain, page, page_size)

    def _study_sets(self) -> tuple[ImageSet, ImageSet]:
        if self.reference is None or not self.galleries or not self.study_dir:
            raise RequestError(503, "the reader study needs reference_parquet, a gallery and study_dir on the server")
        return self.reference, next(iter(self.galleries.values()))

    def _plan(self, reader: str) -> list[tuple[str, int]]:
        real, synthetic = self._study_sets()
        return study.plan(study.check_reader(reader), self.study_items, len(real), len(synthetic))

    def _reader(self, token_sha256: str) -> str:
        """The reader id a token opens (401 for any other token): readers never name themselves."""
        self._study_sets()
        if token_sha256 not in self.readers:
            self.readers = study.load_readers(self.study_dir)
        if token_sha256 not in self.readers:
            raise RequestError(401, "error: unknown reader token: open the study link the study owner sent you")
        return self.readers[token_sha256]

    async def study_add_readers(self, count: int) -> list[dict]:
        self._study_sets()
        return await asyncio.to_thread(study.add_readers, self.study_dir, count)

    async def study_me(self, token_sha256: str) -> dict:
        """The reader's id, list length, and where a resumed session goes on (None: all answered)."""
        reader = self._reader(token_sha256)
        items = len(self._plan(reader))
        done = study.answered_items(self.study_dir, reader)
        pending = [k for k in range(items) if k not in done]
        return {"reader": reader, "items": items, "answered": len(done), "next": pending[0] if pending else None}

    async def study_item(self, token_sha256: str, item: int) -> dict:
        """Item ``item`` of the reader's shuffled list: the image only, never whether it is real."""
        reader = self._reader(token_sha256)
        items = self._plan(reader)
        if not 0 <= item < len(items):
            raise RequestError(404, f"item {item} is out of range: this study has {len(items)} items (0-based)")
        kind, row = items[item]
        source = self._study_sets()[0 if kind == "real" else 1]
        labels = sorted(set(self._study_sets()[0].labels))
        return {
            "reader": reader,
            "item": item,
            "items": len(items),
            "labels": labels,
            "image": source.item(row, False)["image"],
        }

    async def study_answer(self, token_sha256: str, answer: dict) -> dict:
        """Store one answer (``schemas.StudyAnswer`` as a dict) of the token's reader; the first answer is final."""
        reader = self._reader(token_sha256)
        items = self._plan(reader)
        item = answer["item"]
        if not 0 <= item < len(items):
            raise RequestError(404, f"item {item} is out of range: this study has {len(items)} items (0-based)")
        kind, row = items[item]
        source = self._study_sets()[0 if kind == "real" else 1]
        record = {
            "reader": reader,
            "item": item,
            "kind": kind,
            "row": row,
            "label": source.labels[row],
            "says_synthetic": answer["says_synthetic"],
            "says_label": answer.get("says_label"),
            "confidence": answer.get("confidence"),
        }
        await asyncio.to_thread(study.save_answer, self.study_dir, record)
        done = study.answered_items(self.study_dir, reader)
        pending = [k for k in range(len(items)) if k not in done]
        return {"saved": True, "item": item, "next": pending[0] if pending else None}

    async def study_results(self, owner: bool = False) -> dict:
        """Scores; they reveal the truth, so only to the study owner, or to anyone once the study is closed."""
        self._study_sets()
        closed = study.is_closed(self.study_dir)
        if not (owner or closed):
            raise RequestError(
                403,
                "error: study results are shown to the study owner (send the owner token in X-Study-Owner-Token) "
                "or to everyone once the owner closes the study",
            )
        return {**await asyncio.to_thread(study.results, self.study_dir), "closed": closed}

    async def study_close(self) -> dict:
        self._study_sets()
        return await asyncio.to_thread(study.close, self.study_dir)
