"""A tour of every playground tab in headless Chromium, with a screenshot of each: the e2e test's walk, and the
script that makes the screenshots committed under ``docs/images/playground/``.

The tour checks what it shows as it goes (Playwright ``expect``): connected, the model
card's defaults, N generated images with their boxes and nearest images, a preview before
classifying, the gallery, reader links, the reader's page without scores or tabs.

Re-make the committed screenshots (a trained generator, real reference images, a
generated gallery and a trained classifier; ~2 minutes on 2 cores)::

    PYTHONPATH=platform:tests .venv/bin/python tests/helpers/playground_tour.py \\
        --generator runs/gen/busi_tiny --classifier <a saved classifier folder> \\
        --reference runs/data/busi64 --gallery /path/to/busi64_syn_h100 --out docs/images/playground

``tests/e2e/test_playground.py`` runs the same tour on untrained test models and phantoms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

TOKEN = "playground-token-0123456789"
OWNER = "playground-owner-0123456789"
VIEWPORT = {"width": 1280, "height": 900}
MAX_SHOT_BYTES = 300_000  # committed screenshots stay small


def chromium_path() -> str | None:
    return os.environ.get("BUSGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def no_browser_reason() -> str | None:
    """Why the tour cannot run here, or None when it can (``make browser`` installs both)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: run `make browser` (pip install playwright; apt-get install chromium)"
    return None if chromium_path() else "no Chromium found: run `make browser`, or set BUSGEN_CHROMIUM"


def shoot(page, out: Path, name: str) -> Path:
    """A screenshot of the whole page as ``<name>.png``, shrunk until it is under MAX_SHOT_BYTES."""
    from PIL import Image

    fp = out / f"{name}.png"
    page.screenshot(path=str(fp), full_page=True)
    img = Image.open(fp)
    while fp.stat().st_size > MAX_SHOT_BYTES:  # palette PNG first, then smaller
        img = (
            img.convert("RGB").quantize(128)
            if img.mode != "P"
            else img.resize((img.width * 4 // 5, img.height * 4 // 5))
        )
        img.save(fp, optimize=True)
    return fp


def tour(browser, url: str, out: Path, label: str, n: int = 4, errors: list | None = None) -> dict:
    """Drive every tab, screenshot each into ``out``; returns what later checks need (the reader links)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)  # sampling 25 steps on a shared 2-core box takes a while
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport=VIEWPORT)
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(60_000)
    page.goto(url + "/ui")
    page.fill("#token", TOKEN)
    page.click("#token-save")
    expect(page.locator("#conn")).to_contain_text("connected:")
    expect(page.locator("#gen-defaults")).to_contain_text("Model card defaults:")

    # Generate: a class, a drawn box, N images with their boxes (and nearest images when served)
    page.select_option("#gen-label", label)
    box = page.locator("#box-canvas").bounding_box()
    page.mouse.move(box["x"] + 70, box["y"] + 80)
    page.mouse.down()
    page.mouse.move(box["x"] + 170, box["y"] + 170, steps=5)
    page.mouse.up()
    page.fill("#gen-n", str(n))
    page.fill("#gen-seed", "11")
    page.click("#gen-run")
    expect(page.locator("#gen-results canvas.generated")).to_have_count(n)
    expect(page.locator("#status")).to_contain_text(f"{n} image(s) from")
    shots = {"generate": shoot(page, out, "generate")}

    # Classify: an example, previewed before it is sent
    page.click("button[data-tab=classify]")
    expect(page.locator("#clf-examples .example-image").first).to_be_visible()
    page.locator("#clf-examples .example-image").first.click()
    expect(page.locator("#clf-preview-image canvas")).to_have_count(1)
    page.click("#clf-run")
    expect(page.locator("#clf-results .clf-result").first).to_be_visible()
    shots["classify"] = shoot(page, out, "classify")

    # Browse: a page of the first gallery with provenance
    page.click("button[data-tab=browse]")
    expect(page.locator("#gal-grid .gal-item").first).to_be_visible()
    shots["browse"] = shoot(page, out, "browse")

    # Reader study, the owner's side: reader links, scores
    page.click("button[data-tab=study]")
    page.fill("#study-owner", OWNER)
    page.fill("#study-count", "2")
    page.click("#study-add")
    expect(page.locator("#study-links tbody tr")).to_have_count(2)
    links = [page.locator("#study-links input.link").nth(k).input_value() for k in range(2)]

    # Reader study, the reader's side: a fresh browser context opens the link
    reader_ctx = browser.new_context(viewport=VIEWPORT)
    reader = reader_ctx.new_page()
    if errors is not None:
        reader.on("pageerror", lambda exc: errors.append(str(exc)))
    reader.set_default_timeout(60_000)
    reader.goto(links[0])
    expect(reader.locator("#study-progress")).to_contain_text("image 1 of")
    for k, (button, confidence) in enumerate([("#study-real", "4"), ("#study-synthetic", "2")]):
        expect(reader.locator("#study-progress")).to_contain_text(f"image {k + 1} of")
        reader.check(f"input[name=confidence][value='{confidence}']")
        reader.click(button)
    expect(reader.locator("#study-progress")).to_contain_text("image 3 of")
    reader.check("input[name=confidence][value='3']")
    shots["reader"] = shoot(reader, out, "study-reader")
    seen = {
        "reader_url": reader.url,
        "tabs_visible": reader.locator("#tabs").is_visible(),
        "token_form_visible": reader.locator("#token-form").is_visible(),
        "scores_in_page": reader.locator("#tab-study").is_visible(),
    }
    reader_ctx.close()

    page.click("#study-refresh")
    expect(page.locator("#study-results tbody tr").first).to_be_visible()
    shots["study"] = shoot(page, out, "study-owner")
    return {"page": page, "links": links, "shots": shots, "reader": seen}


def _serve_and_tour(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    from busgen.core.raylocal import init_ray
    from busgen.serve.config import ServeArgs
    from helpers.serve import serving

    init_ray(num_cpus=2, object_store_mb=256, quiet=True)
    study_dir = tempfile.mkdtemp(prefix="busgen-tour-study-")
    serve_args = ServeArgs(
        generators={"busgen": args.generator},
        classifier_dir=args.classifier,
        reference_parquet=args.reference,
        galleries={"synthetic": args.gallery},
        study_dir=study_dir,
        study_owner_token=OWNER,
        study_items=10,
        token=TOKEN,
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 0.5, "torch_threads": 1},
        classifier={"num_cpus": 0.25, "torch_threads": 1},
        data={"num_cpus": 0.1},
    )
    with serving(serve_args) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        result = tour(browser, url, Path(args.out), args.label, n=args.n)
        browser.close()
    for name, fp in result["shots"].items():
        print(f"{name}: {fp} ({fp.stat().st_size // 1000} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="exported generator folder")
    parser.add_argument("--classifier", required=True, help="saved classifier folder")
    parser.add_argument("--reference", required=True, help="ingested training set (Parquet file or folder)")
    parser.add_argument("--gallery", required=True, help="generated set (Parquet file or folder)")
    parser.add_argument("--label", default="malignant", help="class to generate in the Generate screenshot")
    parser.add_argument("--n", type=int, default=8, help="images in the Generate screenshot")
    parser.add_argument("--out", default="docs/images/playground")
    reason = no_browser_reason()
    if reason:
        raise SystemExit(f"error: {reason}")
    _serve_and_tour(parser.parse_args())


if __name__ == "__main__":
    main()
