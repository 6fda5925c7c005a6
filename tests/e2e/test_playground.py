"""The /ui playground: its data side (galleries, nearest training image, reader study) and the page in Chromium.

One Serve app with a reference set, a generated
gallery and a study folder, driven over HTTP and then in headless Chromium through
Playwright: load, enter the token, generate, see N images, draw a box, upload for
classification, answer three reader-study items. Screenshots land in
``reports/playground/`` (``$BUSGEN_ARTIFACTS``): the browser test's artifacts. Without
Playwright or a Chromium the browser test is skipped with the reason (``make test-all``
installs both). Slow: a second Serve app and a browser (``make test-all``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests
from helpers.models import export_untrained_tiny, save_random_classifier
from helpers.paths import REPO_ROOT
from helpers.serve import serving, write_gallery, write_reference

from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from busgen.serve import study

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # slow: a second Serve app and headless Chromium


TOKEN = "playground-token-0123456789"


SIZE = 32
BIG_SEED = 2089621353774915728  # issue 31: a JSON number shows as ...915800 in the browser


ARTIFACTS = Path(os.environ.get("BUSGEN_ARTIFACTS", REPO_ROOT / "reports")) / "playground"


@pytest.fixture(scope="module")
def playground(ray_local, tmp_path_factory):
    from busgen.serve.config import ServeArgs

    root = tmp_path_factory.mktemp("playground")
    args = ServeArgs(
        generators={"base": str(export_untrained_tiny(root / "g0", seed=0, size=SIZE, domains=("phantom", "site-b")))},
        classifier_dir=save_random_classifier(root / "clf"),
        classifiers={"second": save_random_classifier(root / "clf2")},
        reference_parquet=str(write_reference(root / "reference.parquet")),
        galleries={"synthetic": str(write_gallery(root / "synthetic", first_seed=BIG_SEED))},
        study_dir=str(root / "study"),
        study_owner_token="playground-owner-0123456789",
        study_items=6,
        token=TOKEN,
        limits={"max_n": 4, "max_steps": 4, "default_steps": 2},
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 0.5, "max_batch_size": 8, "max_ongoing_requests": 8, "torch_threads": 1},
        classifier={"num_cpus": 0.25, "max_batch_size": 8, "max_ongoing_requests": 8, "torch_threads": 1},
    )
    with serving(args) as url:
        yield {"url": url, "root": root}


def get(pg, path: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(kwargs.pop("method", "GET"), pg["url"] + path, headers=headers, timeout=60, **kwargs)


def test_playground_api_needs_the_token_and_serves_data(playground):
    page = get(playground, "/ui", token=None)
    assert page.status_code == 200 and "BUSGen playground" in page.text, "the page shell is static"
    assert get(playground, "/ui/../ingress.py", token=None).status_code == 404
    for path in ("/v1/gallery/synthetic", "/v1/study/alice/item/0", "/v1/study/results", "/v1/models"):
        assert get(playground, path, token=None).status_code == 401, path
    models = get(playground, "/v1/models").json()
    assert models["galleries"] == ["synthetic"] and models["nearest"] and models["study"]
    assert set(models["classifiers"]) == {"default", "second"}
    assert models["protect"] == ["none", "cpsample"] and models["protect_planned"] == []
    gen = get(playground, "/v1/generate", method="POST", json={"label": "benign", "n": 2, "nearest": True}).json()
    assert len(gen["nearest"]) == 2 and gen["nearest"][0]["source"].startswith("phantom/")
    unprotectable = get(playground, "/v1/generate", method="POST", json={"label": "benign", "protect": "cpsample"})
    assert unprotectable.status_code == 422 and "busgen protect" in unprotectable.json()["detail"]
    assert "/" not in unprotectable.json()["detail"].split("`")[0], "no server path reaches the client"
    assert get(playground, "/v1/gallery/nope").status_code == 404
    item = get(playground, "/v1/study/carol/item/0").json()
    assert item["items"] == 6 and "kind" not in item and "image" in item, "the truth stays on the server"


def have_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: run `make browser` (pip install playwright; apt-get install chromium)"
    if not chromium_path():
        return "no Chromium found: run `make browser` (apt-get install -y chromium), or set BUSGEN_CHROMIUM"
    return None


def chromium_path() -> str | None:
    return os.environ.get("BUSGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_playground_in_headless_chromium(playground):
    reason = have_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    upload = playground["root"] / "scan.png"
    upload.write_bytes(encode_png(make_phantom_arrays(1, 48, seed=9)[0][0]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(30_000)
        page.goto(playground["url"] + "/ui")
        expect(page.locator("#conn")).to_have_text("not connected")
        page.fill("#token", TOKEN)
        page.click("#token-save")
        expect(page.locator("#conn")).to_contain_text("connected: 1 generator(s), 2 classifier(s)")

        # Generate: class, domain, a box drawn on the canvas, steps, guidance, seed; N images with neighbours
        page.select_option("#gen-label", "malignant")
        page.select_option("#gen-domain", "site-b")
        box = page.locator("#box-canvas").bounding_box()
        page.mouse.move(box["x"] + 60, box["y"] + 70)
        page.mouse.down()
        page.mouse.move(box["x"] + 150, box["y"] + 180, steps=5)
        page.mouse.up()
        expect(page.locator("#box-value")).not_to_have_text("drawn from the prior")
        assert page.locator("#gen-protect option[value=cpsample]").is_enabled(), "offered; the server checks the model"
        page.fill("#gen-n", "3")
        page.fill("#gen-steps", "2")
        page.fill("#gen-seed", "11")
        page.click("#gen-run")
        expect(page.locator("#gen-results .gen-item img.generated")).to_have_count(3)
        expect(page.locator("#gen-results .similarity")).to_have_count(3)
        page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)

        # Classify: upload a PNG, one probability table per registered classifier
        page.click("button[data-tab=classify]")
        page.set_input_files("#clf-file", str(upload))
        page.click("#clf-run")
        expect(page.locator("#clf-results .clf-result")).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / "classify.png"), full_page=True)

        # Browse: filter by class, provenance on each card
        page.click("button[data-tab=browse]")
        expect(page.locator("#gal-grid .gal-item")).to_have_count(12)
        expect(page.locator("#gal-grid .prov").first).to_contain_text(f"seed {BIG_SEED},")
        page.select_option("#gal-label", "malignant")
        expect(page.locator("#gal-grid .gal-item")).to_have_count(7)
        expect(page.locator("#gal-grid .prov").first).to_contain_text("seed")
        page.screenshot(path=str(ARTIFACTS / "browse.png"), full_page=True)

        # Reader study: three answers, stored and scored
        page.click("button[data-tab=study]")
        page.fill("#study-reader", "dana")
        page.fill("#study-owner", "playground-owner-0123456789")
        page.click("#study-start")
        for k, button in enumerate(["#study-real", "#study-synthetic", "#study-real"]):
            expect(page.locator("#study-progress")).to_have_text(f"item {k + 1} of 6")
            page.select_option("#study-label", "benign")
            page.click(button)
        expect(page.locator("#study-progress")).to_have_text("item 4 of 6")
        expect(page.locator("#study-results tr[data-reader=dana] td").first).to_have_text("3")
        page.screenshot(path=str(ARTIFACTS / "study.png"), full_page=True)
        browser.close()
    assert not errors, errors
    deadline = time.monotonic() + 10
    while len(study.load_answers(playground["root"] / "study")) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    answers = study.load_answers(playground["root"] / "study").to_pylist()
    assert [a["reader"] for a in answers] == ["dana"] * 3 and all(a["says_label"] == "benign" for a in answers)
