"""The /ui playground: its data side (galleries, nearest training image, reader study) and the page in Chromium.

One Serve app with a reference set, a generated
gallery and a study folder, driven over HTTP and then in headless Chromium through
Playwright (``helpers.playground_tour``): connect, generate with a drawn box, zoom and
window/level, the nearest image's verdict, downloads, a previewed upload and examples,
the gallery, reader links, and the reader's page (no tabs or scores). Screenshots of every
tab land in ``reports/playground/`` (``$BUSGEN_ARTIFACTS``); the committed ones in
``docs/images/playground/`` come from the same tour run on trained models. Without
Playwright or a Chromium the browser test is skipped with the reason (``make test-all``
installs both). Slow: a second Serve app and a browser (``make test-all``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
from helpers.models import export_untrained_tiny, save_random_classifier
from helpers.paths import REPO_ROOT
from helpers.playground_tour import OWNER, TOKEN, chromium_path, no_browser_reason, tour
from helpers.serve import serving, write_gallery, write_reference

from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from busgen.serve import study

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # slow: a second Serve app and headless Chromium


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
        study_owner_token=OWNER,
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
    for path in ("/v1/gallery/synthetic", "/v1/study/results", "/v1/models", "/v1/examples"):
        assert get(playground, path, token=None).status_code == 401, path
    models = get(playground, "/v1/models").json()
    assert models["galleries"] == ["synthetic"] and models["nearest"] and models["study"]
    assert set(models["classifiers"]) == {"default", "second"}
    assert models["protect"] == ["none", "cpsample"] and models["protect_planned"] == []
    assert models["generators"][0]["defaults"] == {"sampler": "ddim", "steps": 25, "guidance": 1.8}, "the card's"
    gen = get(playground, "/v1/generate", method="POST", json={"label": "benign", "n": 2, "nearest": True}).json()
    assert len(gen["nearest"]) == 2 and gen["nearest"][0]["source"].startswith("phantom/")
    assert gen["nearest_metric"]["threshold"] == 0.95 and "Pearson" in gen["nearest_metric"]["metric"]
    assert {"possible_copy", "percentile"} <= set(gen["nearest"][0])
    assert len(gen["boxes"]) == 2 and all(len(b) == 4 for b in gen["boxes"]), "boxes drawn from the prior, returned"
    boxed = get(playground, "/v1/generate", method="POST", json={"label": "benign", "box": [0.1, 0.2, 0.5, 0.6]})
    assert boxed.json()["boxes"] == [[0.1, 0.2, 0.5, 0.6]]
    unprotectable = get(playground, "/v1/generate", method="POST", json={"label": "benign", "protect": "cpsample"})
    assert unprotectable.status_code == 422 and "busgen protect" in unprotectable.json()["detail"]
    assert "/" not in unprotectable.json()["detail"].split("`")[0], "no server path reaches the client"
    assert get(playground, "/v1/gallery/nope").status_code == 404
    examples = get(playground, "/v1/examples").json()["examples"]
    assert [e["label"] for e in examples] == ["benign", "malignant", "normal"]
    assert get(playground, "/v1/study/item/0").status_code == 401, "study items need a reader token"


def pixel_square(page, selector: str) -> list:
    """Zoom of a canvas, and whether each zoom x zoom block of it is one colour (no smoothing)."""
    return page.evaluate(
        """(sel) => {
          const c = document.querySelector(sel), z = Number(c.dataset.zoom);
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let flat = true;
          for (let y = 0; y < c.height; y += z) for (let x = 0; x < c.width; x += z) {
            const first = d[(y * c.width + x) * 4];
            for (let k = 1; k < z; k++) if (d[((y + k) * c.width + x + k) * 4] !== first) flat = false;
          }
          return [z, c.width, flat];
        }""",
        selector,
    )


def test_playground_in_headless_chromium(playground):
    reason = no_browser_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        seen = tour(browser, playground["url"], ARTIFACTS, "malignant", n=3, errors=errors)
        page = seen["page"]

        # The reader's page: the token left the address bar, and no tabs, API token field or scores are shown
        assert "#" not in seen["reader"]["reader_url"] and not any(
            seen["reader"][k] for k in ("tabs_visible", "token_form_visible", "scores_in_page")
        ), seen["reader"]
        study_dir = playground["root"] / "study"
        answers = study.load_answers(study_dir).to_pylist()
        assert [(a["reader"], a["says_synthetic"], a["confidence"]) for a in answers] == [
            ("reader-01", False, 4),
            ("reader-01", True, 2),
        ]
        expect(page.locator("#study-results tr[data-reader=reader-01] td").first).to_have_text("2")

        # Generate: the model card's defaults, capped by this server's limits (max_steps 4)
        page.click("button[data-tab=generate]")
        assert page.input_value("#gen-steps") == "4" and page.input_value("#gen-guidance") == "1.8"
        assert page.input_value("#gen-sampler") == "ddim"
        expect(page.locator("#gen-defaults")).to_contain_text("25 steps, guidance 1.8, ddim")
        # The lesion box is drawn on each output (yellow on grey images), and can be hidden
        yellow = (
            "(sel) => { const c = document.querySelector(sel); const d = c.getContext('2d').getImageData("
            "0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) "
            "if (d[i] > 200 && d[i + 1] > 150 && d[i + 2] < 60) n++; return n; }"
        )
        assert page.evaluate(yellow, "#gen-results canvas.generated") > 100
        page.uncheck("#show-box")
        assert page.evaluate(yellow, "#gen-results canvas.generated") == 0
        # Native pixels at an integer zoom: 32 px at 4x is 128 canvas pixels, each image pixel a flat 4x4 block
        assert pixel_square(page, "#gen-results canvas.generated") == [4, SIZE * 4, True]
        page.select_option("#zoom", "8")
        assert pixel_square(page, "#gen-results canvas.generated") == [8, SIZE * 8, True]
        # Window/level: a narrow window turns mid-grey pixels to black or white
        before = page.evaluate("document.querySelector('#gen-results canvas.nearest').toDataURL()")
        page.fill("#win-width", "8")
        page.dispatch_event("#win-width", "input")
        after = page.evaluate("document.querySelector('#gen-results canvas.nearest').toDataURL()")
        assert before != after, "window/level redraws the images"
        page.click("#win-reset")
        # Nearest image: the number with its unit, threshold and verdict
        info = page.locator("#gen-results .nearest-info").first
        expect(info).to_contain_text("r = ")
        expect(info).to_contain_text("threshold 0.95")
        expect(page.locator("#gen-results .verdict")).to_have_count(3)
        expect(page.locator("#gen-summary .legend")).to_contain_text("Pearson correlation of 32x32 thumbnails")
        # Downloads: each image as its original PNG, the whole result as JSON
        with page.expect_download() as dl:
            page.locator("#gen-results a.download").first.click()
        assert dl.value.suggested_filename.endswith(".png")
        assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with page.expect_download() as dl:
            page.locator("#gen-summary a.download").click()
        result = json.loads(Path(dl.value.path()).read_text())
        assert result["label"] == "malignant" and len(result["images"]) == len(result["boxes"]) == 3
        assert result["boxes"][0] == pytest.approx([70 / 256, 80 / 256, 170 / 256, 170 / 256], abs=0.01)

        # Classify: an uploaded file is previewed before it is sent, then one table per classifier
        upload = playground["root"] / "scan.png"
        upload.write_bytes(encode_png(make_phantom_arrays(1, 48, seed=9)[0][0]))
        page.click("button[data-tab=classify]")
        page.set_input_files("#clf-file", str(upload))
        expect(page.locator("#clf-preview-name")).to_have_text("scan.png")
        expect(page.locator("#clf-preview-image canvas.upload")).to_have_count(1)
        page.click("#clf-run")
        expect(page.locator("#clf-results .clf-result")).to_have_count(2)

        # Browse: provenance, with the big seed as text (not rounded as a JavaScript number)
        page.click("button[data-tab=browse]")
        expect(page.locator("#gal-grid .gal-item")).to_have_count(12)
        expect(page.locator("#gal-grid .prov").first).to_contain_text(f"seed {BIG_SEED},")
        page.select_option("#gal-label", "malignant")
        expect(page.locator("#gal-grid .gal-item")).to_have_count(7)
        browser.close()
    assert not errors, errors
