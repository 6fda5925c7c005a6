"""The reader study cannot be gamed: the first answer is final, and scores go to the owner or after closing.

A reader who could re-answer an item and watch the live scores would learn which items
were synthetic and correct their answers. Now a re-answer is refused (409, atomically,
so racing answers cannot both win), and the scores (which reveal the truth) are shown
only to the study owner's token, or to everyone once the owner closes the study; a
closed study takes no more answers. Readers are token-bound: the owner creates them, and
a reader's token opens that reader's items and nothing else (no free-text names).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers.models import export_untrained_tiny
from helpers.serve import serving

from busgen.serve import study
from busgen.serve.errors import RequestError

pytestmark = pytest.mark.timeout(240)

TOKEN = "study-api-token-0123456789"
OWNER = "study-owner-token-9876543210"
SIZE = 32


def record(item: int, says_synthetic: bool, reader: str = "alice") -> dict:
    return {"reader": reader, "item": item, "kind": "real", "row": 0, "label": "benign",
            "says_synthetic": says_synthetic, "says_label": None}  # fmt: skip


# The study folder (no Ray)


def test_the_first_answer_is_final_and_a_re_answer_is_409(tmp_path):
    study.save_answer(tmp_path, record(0, says_synthetic=True))
    with pytest.raises(RequestError) as err:
        study.save_answer(tmp_path, record(0, says_synthetic=False))
    assert err.value.status_code == 409 and "first answer is final" in err.value.detail
    (stored,) = study.load_answers(tmp_path).to_pylist()
    assert stored["says_synthetic"] is True, "the first answer stands"
    study.save_answer(tmp_path, record(0, says_synthetic=False, reader="bob"))  # another reader is independent


def test_racing_answers_to_one_item_store_exactly_one(tmp_path):
    def attempt(k: int) -> int:
        try:
            study.save_answer(tmp_path, record(3, says_synthetic=bool(k % 2)))
            return 200
        except RequestError as exc:
            return exc.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(16)))
    assert sorted(statuses) == [200] + [409] * 15
    assert len(study.load_answers(tmp_path)) == 1
    assert not list((tmp_path / "answers" / "alice").glob(".*.tmp")), "no temporary file is left behind"


def test_a_closed_study_takes_no_more_answers(tmp_path):
    study.save_answer(tmp_path, record(0, True))
    assert study.close(tmp_path) == {"closed": True} == study.close(tmp_path)
    with pytest.raises(RequestError, match="closed") as err:
        study.save_answer(tmp_path, record(1, True))
    assert err.value.status_code == 409


# The served study


@pytest.fixture(scope="module")
def study_server(ray_local, tmp_path_factory):
    from helpers.hostile import write_gallery, write_reference

    from busgen.serve.config import ServeArgs

    root = tmp_path_factory.mktemp("hardening2-study")
    args = ServeArgs(
        generators={"base": str(export_untrained_tiny(root / "g0", size=SIZE))},
        reference_parquet=str(write_reference(root / "reference.parquet")),
        galleries={"synthetic": str(write_gallery(root / "synthetic"))},
        study_dir=str(root / "study"),
        study_items=4,
        study_owner_token=OWNER,
        limits={"max_n": 2, "max_steps": 2, "default_steps": 2},
        token=TOKEN,
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 0.5, "max_batch_size": 4, "max_ongoing_requests": 4, "torch_threads": 1},
    )
    with serving(args) as url:
        yield url


def call(url: str, method: str, path: str, owner: str | None = None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"} | ({"X-Study-Owner-Token": owner} if owner else {})
    return requests.request(method, url + path, headers=headers, timeout=60, **kwargs)


def reader_call(url: str, method: str, path: str, reader_token: str | None, **kwargs) -> requests.Response:
    """A reader's call: the reader token only, no API token (a reader link carries nothing else)."""
    headers = {"X-Study-Reader-Token": reader_token} if reader_token else {}
    return requests.request(method, url + path, headers=headers, timeout=60, **kwargs)


def test_readers_are_created_by_the_owner_and_their_token_opens_only_their_own_items(study_server):
    url = study_server
    assert call(url, "POST", "/v1/study/readers", json={"count": 1}).status_code == 403, "only the owner adds readers"
    created = call(url, "POST", "/v1/study/readers", OWNER, json={"count": 2}).json()["readers"]
    (ann, ben) = created
    assert ann["link"] == f"/ui/index.html#reader={ann['token']}" and ann["reader"] != ben["reader"]
    me = reader_call(url, "GET", "/v1/study/me", ann["token"]).json()
    assert me == {"reader": ann["reader"], "items": 4, "answered": 0, "next": 0}
    item = reader_call(url, "GET", "/v1/study/item/0", ann["token"]).json()
    assert item["reader"] == ann["reader"] and "kind" not in item and "image" in item, "the truth stays on the server"
    for token in (None, "not-a-reader-token-0000000000"):
        refused = reader_call(url, "GET", "/v1/study/item/0", token)
        assert refused.status_code == 401 and refused.json()["detail"].startswith("error: "), token
    assert call(url, "GET", "/v1/study/item/0").status_code == 401, "the API token is not a reader"
    assert reader_call(url, "GET", "/v1/models", ann["token"]).status_code == 401, "a reader token opens nothing else"
    assert reader_call(url, "GET", "/v1/gallery/synthetic", ann["token"]).status_code == 401
    no_confidence = reader_call(url, "POST", "/v1/study/answer", ann["token"], json={"item": 0, "says_synthetic": True})
    assert no_confidence.status_code == 422, "the confidence (1-5) is required"


def test_served_study_answers_once_and_shows_scores_to_the_owner_then_to_all_after_closing(study_server):
    url = study_server
    (dana,) = call(url, "POST", "/v1/study/readers", OWNER, json={"count": 1}).json()["readers"]
    answer = {"item": 0, "says_synthetic": True, "confidence": 4, "says_label": None}
    first = reader_call(url, "POST", "/v1/study/answer", dana["token"], json=answer)
    assert first.status_code == 200 and first.json()["next"] == 1
    again = reader_call(url, "POST", "/v1/study/answer", dana["token"], json=answer | {"says_synthetic": False})
    assert again.status_code == 409 and again.json()["detail"].startswith("error: ")
    assert reader_call(url, "GET", "/v1/study/me", dana["token"]).json()["next"] == 1, "a reopened link goes on"

    for owner in (None, "not-the-owner-token-000000"):
        hidden = call(url, "GET", "/v1/study/results", owner)
        assert hidden.status_code == 403 and "study owner" in hidden.json()["detail"], owner
    shown = call(url, "GET", "/v1/study/results", OWNER)
    assert shown.status_code == 200 and shown.json()["readers"][dana["reader"]]["answered"] == 1
    assert shown.json()["readers"][dana["reader"]]["mean_confidence"] == 4.0
    assert shown.json()["closed"] is False

    assert call(url, "POST", "/v1/study/close").status_code == 403, "only the owner closes"
    assert call(url, "POST", "/v1/study/close", OWNER).json() == {"closed": True}
    after = call(url, "GET", "/v1/study/results")
    assert after.status_code == 200 and after.json()["closed"] is True
    late = reader_call(url, "POST", "/v1/study/answer", dana["token"], json=answer | {"item": 1})
    assert late.status_code == 409 and "closed" in late.json()["detail"]
