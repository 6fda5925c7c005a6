"""The /ui playground with hostile names: no server string is ever run as HTML, and the page is locked down.

Labels, domains, model ids, samplers and class names reach the page from data made
elsewhere (a manifest's domain column, a generated set, a classifier folder received
from a colleague). Here every one of them is an ``<img src=x onerror=...>`` payload: a
real Serve app on 127.0.0.1 serves them, headless Chromium (Playwright) drives the
page through connect, generate, classify and browse, and the test checks that no
payload ran, none became an element, and each shows as plain text. The page's headers
(strict CSP, X-Frame-Options, nosniff) are checked over HTTP.
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from helpers.models import export_untrained_tiny
from helpers.serve import serving

from busgen.data import schema as S
from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # slow: a Serve app and headless Chromium

TOKEN = "ui-hardening-token-0123456789"
SIZE = 32


def payload(where: str) -> str:
    """Markup that sets ``window.x<where>`` if it is ever parsed as HTML (short: domains are at most 64 chars)."""
    return f"<img src=x onerror=top.x{where}=1>"


WHERE = {"d": "domain", "l": "label", "c": "class", "m": "model-id", "s": "sampler"}
DOMAIN, LABEL, CLASS, MODEL_ID, SAMPLER = (payload(k) for k in WHERE)


def hostile_gallery(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            S.IMAGE: [encode_png(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)) for _ in range(4)],
            S.LABEL: [LABEL, "benign", LABEL, "malignant"],
            S.DOMAIN: [DOMAIN] * 4,
            S.SEED: [0, 1, 2, 3],
            S.MODEL_ID: [MODEL_ID] * 4,
            S.SAMPLER: [SAMPLER] * 4,
        }
    )
    pq.write_table(table, folder / "shard-00000.parquet")
    return folder


def hostile_classifier(folder) -> str:
    from helpers.hostile import save_random_classifier

    return save_random_classifier(folder, (CLASS, "benign", "malignant"))


def chromium_path() -> str | None:
    return os.environ.get("BUSGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def no_browser_reason() -> str | None:
    """Why the browser test cannot run here, or None when it can (``make browser`` installs both)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: run `make browser`"
    return None if chromium_path() else "no Chromium found: run `make browser`, or set BUSGEN_CHROMIUM"


@pytest.fixture(scope="module")
def hostile_server(ray_local, tmp_path_factory):
    from busgen.serve.config import ServeArgs

    root = tmp_path_factory.mktemp("hostile-ui")
    args = ServeArgs(
        generators={"base": str(export_untrained_tiny(root / "g0", size=SIZE, domains=("phantom", DOMAIN)))},
        classifier_dir=hostile_classifier(root / "clf"),
        galleries={"synthetic": str(hostile_gallery(root / "synthetic"))},
        token=TOKEN,
        limits={"max_n": 2, "max_steps": 2, "default_steps": 2},
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 0.5, "max_batch_size": 4, "max_ongoing_requests": 4, "torch_threads": 1},
        classifier={"num_cpus": 0.25, "max_batch_size": 4, "max_ongoing_requests": 4, "torch_threads": 1},
    )
    with serving(args) as url:
        yield {"url": url, "root": root}


def test_the_page_is_served_with_a_strict_csp_and_no_framing_or_sniffing(hostile_server):
    for name in ("index.html", "app.js", "style.css"):
        resp = requests.get(f"{hostile_server['url']}/ui/{name}", timeout=30)
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-content-type-options"] == "nosniff"
    page = requests.get(f"{hostile_server['url']}/ui/index.html", timeout=30).text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "no inline script: the CSP would block it"
    assert not re.search(r"\son[a-z]+\s*=", page) and "style=" not in page, "no inline handlers or styles"
    api = requests.get(f"{hostile_server['url']}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert api.headers["x-content-type-options"] == "nosniff" and api.headers["x-frame-options"] == "DENY"


def test_hostile_names_show_as_text_and_never_run_in_chromium(hostile_server):
    reason = no_browser_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a shared 2-core box samples slowly

    upload = hostile_server["root"] / "scan.png"
    upload.write_bytes(encode_png(make_phantom_arrays(1, 48, seed=9)[0][0]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.set_default_timeout(30_000)
        page.goto(hostile_server["url"] + "/ui")
        page.fill("#token", TOKEN)
        page.click("#token-save")
        expect(page.locator("#conn")).to_contain_text("connected: 1 generator(s), 1 classifier(s)")

        # Generate with the hostile domain: the option shows it as text and the request carries it
        page.select_option("#gen-domain", DOMAIN)
        page.fill("#gen-n", "1")
        page.click("#gen-run")
        expect(page.locator("#status")).to_contain_text("1 image(s) from base")
        expect(page.locator("#gen-results .gen-item canvas.generated")).to_have_count(1)

        # Classify: the hostile class name is a table heading's text
        page.click("button[data-tab=classify]")
        page.set_input_files("#clf-file", str(upload))
        page.click("#clf-run")
        expect(page.locator("#clf-results .clf-result th").first).to_have_text(CLASS)

        # Browse: hostile label, domain, model id and sampler on every card, as text
        page.click("button[data-tab=browse]")
        expect(page.locator("#gal-grid .gal-item")).to_have_count(4)
        first = page.locator("#gal-grid .gal-item").first
        expect(first).to_contain_text(f"{LABEL} / {DOMAIN}")
        expect(first.locator(".prov")).to_contain_text(MODEL_ID)
        expect(first.locator(".prov")).to_contain_text(SAMPLER)
        page.select_option("#gal-label", LABEL)
        expect(page.locator("#gal-grid .gal-item")).to_have_count(2)

        ran = [WHERE[k] for k in WHERE if page.evaluate(f"window.x{k} === 1")]
        injected = page.evaluate("document.querySelectorAll('img[src=\"x\"]').length")
        browser.close()
    assert ran == [], f"payloads ran: {ran}"
    assert injected == 0, "a payload became an element"
    assert dialogs == []
