"""The reader study cannot be gamed: the first answer is final, and scores go to the owner or after closing.

A reader who could re-answer an item and watch the live scores would learn which items
were synthetic and correct their answers. Now a re-answer is refused (409, atomically,
so racing answers cannot both win), and the scores (which reveal the truth) are shown
only to the study owner's token, or to everyone once the owner closes the study; a
closed study takes no more answers.
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


def test_served_study_answers_once_and_shows_scores_to_the_owner_then_to_all_after_closing(study_server):
    url = study_server
    answer = {"item": 0, "says_synthetic": True, "says_label": None}
    assert call(url, "POST", "/v1/study/dana/answer", json=answer).status_code == 200
    again = call(url, "POST", "/v1/study/dana/answer", json=answer | {"says_synthetic": False})
    assert again.status_code == 409 and again.json()["detail"].startswith("error: ")

    for owner in (None, "not-the-owner-token-000000"):
        hidden = call(url, "GET", "/v1/study/results", owner)
        assert hidden.status_code == 403 and "study owner" in hidden.json()["detail"], owner
    shown = call(url, "GET", "/v1/study/results", OWNER)
    assert shown.status_code == 200 and shown.json()["readers"]["dana"]["answered"] == 1
    assert shown.json()["closed"] is False

    assert call(url, "POST", "/v1/study/close").status_code == 403, "only the owner closes"
    assert call(url, "POST", "/v1/study/close", OWNER).json() == {"closed": True}
    after = call(url, "GET", "/v1/study/results")
    assert after.status_code == 200 and after.json()["closed"] is True
    late = call(url, "POST", "/v1/study/dana/answer", json=answer | {"item": 1})
    assert late.status_code == 409 and "closed" in late.json()["detail"]
