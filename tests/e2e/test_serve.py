"""Online inference: a real Ray Serve HTTP endpoint on 127.0.0.1 with two tiny generators and a classifier.

One Serve application serves the whole module (start ~10 s). Every bad-input test
ends by checking that the service still answers. Pure helpers (args, auth, multipart)
are tested without Ray first.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile

import numpy as np
import pytest
import requests
from helpers.models import CLASSES, export_untrained_tiny, save_random_classifier
from helpers.serve import serving

from busgen.data.imageio import decode_image, encode_png
from busgen.serve.app import build_app
from busgen.serve.auth import TOKEN_ENV, TOKEN_FILE_ENV, token_id
from busgen.serve.config import ServeArgs

pytestmark = pytest.mark.timeout(240)  # fast suite (runs in CI); the whole module takes well under 90 s


TOKEN = "test-token-0123456789abcdef"


SIZE = 32


LIMITS = dict(max_n=4, max_steps=4, default_steps=2, max_upload_bytes=256 * 1024, max_pixels=1_000_000)


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    args = ServeArgs(
        generators={
            "base": str(export_untrained_tiny(root / "g0", seed=0, size=SIZE)),
            "alt": str(export_untrained_tiny(root / "g1", seed=1, size=SIZE)),
        },
        classifier_dir=save_random_classifier(root / "clf"),
        token=TOKEN,
        limits=LIMITS,
        access_log_fp=str(root / "access.log"),
        # Small queues, so the flood test overloads them in seconds; sequential tests never queue.
        ingress={"num_cpus": 0.25, "max_ongoing_requests": 24, "max_queued_requests": 8, "retry_after_s": 2},
        generator={
            "num_cpus": 1,
            "max_batch_size": 8,
            "max_ongoing_requests": 8,
            "max_queued_requests": 4,
            "torch_threads": 1,
        },
        classifier={"num_cpus": 0.5, "max_batch_size": 8, "max_ongoing_requests": 16, "torch_threads": 1},
    )
    with serving(args) as url:
        yield {"url": url, "root": root}


def call(server, method: str, path: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, server["url"] + path, headers=headers, timeout=60, **kwargs)


def generate(server, **body) -> requests.Response:
    return call(server, "POST", "/v1/generate", json={"label": "benign", **body})


def pngs(resp: requests.Response) -> list[np.ndarray]:
    return [decode_image(base64.b64decode(s)) for s in resp.json()["images"]]


def still_answers(server) -> None:
    assert call(server, "GET", "/healthz", token=None).status_code == 200
    assert generate(server, n=1).status_code == 200


def test_health_openapi_and_models(server):
    assert call(server, "GET", "/healthz", token=None).json() == {"status": "ok"}
    assert call(server, "GET", "/readyz", token=None).json() == {"status": "ready"}, "ready or not, never why"
    spec = call(server, "GET", "/openapi.json", token=None).json()
    assert {"/v1/generate", "/v1/classify", "/v1/models"} <= set(spec["paths"])
    resp = call(server, "GET", "/v1/models")
    models = resp.json()
    assert resp.status_code == 200 and models["default_generator"] == "base"
    assert {g["id"] for g in models["generators"]} == {"base", "alt"}
    assert models["classifier"]["class_names"] == list(CLASSES)
    assert str(server["root"]) not in resp.text, "server-side paths must not leak to clients"


def test_requests_without_valid_token_get_401(server):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/generate"), ("POST", "/v1/classify")]:
        for token in (None, "wrong-token-0123456789abcdef"):
            resp = call(server, method, path, token=token, json={"label": "benign"})
            assert resp.status_code == 401, (method, path, token, resp.text)
            assert resp.headers.get("www-authenticate") == "Bearer"


def test_generate_returns_valid_pngs_deterministic_for_a_seed(server):
    first = generate(server, n=3, seed=7, steps=2)
    assert first.status_code == 200, first.text
    images = pngs(first)
    assert len(images) == 3 and all(im.shape == (SIZE, SIZE) and im.dtype == np.uint8 for im in images)
    assert first.json()["seeds"] == [7, 8, 9]
    again = generate(server, n=3, seed=7, steps=2)
    assert again.json()["images"] == first.json()["images"]
    assert generate(server, n=1, seed=8, steps=2).json()["images"][0] == first.json()["images"][1], (
        "image i depends on seed + i only"
    )


def test_two_generators_served_by_id_differ(server):
    base, alt = generate(server, n=2, seed=3, model="base"), generate(server, n=2, seed=3, model="alt")
    assert base.status_code == alt.status_code == 200
    assert base.json()["model_id"] != alt.json()["model_id"]
    assert not np.array_equal(pngs(base)[0], pngs(alt)[0])


def test_generate_bad_inputs_are_4xx_and_service_survives(server):
    cases = [
        ({"n": 5}, 422, "limit of 4"),
        ({"steps": 10}, 422, "limit of 4"),
        ({"label": "cyst"}, 422, "benign"),
        ({"domain": "mars"}, 422, "phantom"),
        ({"model": "nope"}, 404, "available models"),
        ({"model": "../../etc/passwd"}, 404, "unknown model"),
        ({"colour": "red"}, 422, "extra"),
        ({"n": 0}, 422, "greater than or equal"),
        ({"box": [0.5, 0.5, 0.1, 0.9]}, 422, "x0 < x1"),
    ]
    for body, status, needle in cases:
        resp = generate(server, **body)
        assert resp.status_code == status and needle in resp.text, (body, resp.status_code, resp.text)
    bad_json = call(server, "POST", "/v1/generate", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422
    assert call(server, "POST", "/v1/generate", data=b"{" + b" " * 70_000 + b"}").status_code == 413
    still_answers(server)


def dicom_bytes(image: np.ndarray) -> bytes:
    """A minimal uncompressed MONOCHROME2 DICOM file."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # ultrasound image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("upload.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = image.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def jpeg_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def test_classify_png_jpeg_dicom_returns_probabilities(server):
    from busgen.data.phantom import make_phantom_arrays

    image = make_phantom_arrays(1, 48, seed=0)[0][0]  # 48 px: the server resizes to the model's 32
    uploads = [
        {"files": {"file": ("a.png", encode_png(image), "image/png")}},
        {"data": jpeg_bytes(image), "headers": {"Content-Type": "image/jpeg"}},
        {"files": {"file": ("a.dcm", dicom_bytes(image), "application/dicom")}},
    ]
    for kwargs in uploads:
        resp = call(server, "POST", "/v1/classify", **kwargs)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert set(out["probs"]) == set(CLASSES) and abs(sum(out["probs"].values()) - 1.0) < 1e-4
        assert out["label"] == max(out["probs"], key=out["probs"].get) and out["model_version"].endswith(
            out["model_id"]
        )


def test_classify_bad_uploads_are_4xx_and_service_survives(server):
    good = encode_png(np.full((64, 64), 128, np.uint8))
    bomb = encode_png(np.zeros((1200, 1200), np.uint8))  # ~5 kB on the wire, 1.44 MP decoded
    cases = [
        (b"", 400, "empty"),
        (b"garbage bytes, not an image" * 10, 415, "unsupported file type"),
        (good[:60], 400, "corrupt"),
        (bomb, 413, "too large"),
        (encode_png(np.zeros((8, 8), np.uint8)), 422, "too small"),
        (encode_png(np.zeros((16, 400), np.uint8)), 422, "elongated"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * (300 * 1024), 413, "too large"),
        (b"\0" * 128 + b"DICM" + b"\x02\x00" * 40, 400, "DICOM"),
    ]
    for data, status, needle in cases:
        resp = call(server, "POST", "/v1/classify", data=data, headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == status and needle in resp.text, (data[:16], resp.status_code, resp.text)
    no_file = call(server, "POST", "/v1/classify", files={"other": (None, "x")})
    assert no_file.status_code == 400
    assert call(server, "POST", "/v1/classify", data=good).status_code == 200
    still_answers(server)


def test_access_log_has_one_json_line_per_request(server):
    call(server, "GET", "/v1/models")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in (server["root"] / "access.log").read_text().splitlines()]
        if any(r["path"] == "/v1/models" for r in lines):
            break
        time.sleep(0.2)
    assert {"ts", "request_id", "client", "method", "path", "status", "latency_ms", "n"} <= set(lines[-1])
    gen = [r for r in lines if r["path"] == "/v1/generate" and r["status"] == 200]
    assert gen and all(r["n"] >= 1 and r["latency_ms"] > 0 for r in gen)
    assert any(r["status"] == 401 and r["client"] is None for r in lines)
    assert {r["client"] for r in gen} == {token_id(hashlib.sha256(TOKEN.encode()).hexdigest())}
    assert TOKEN not in (server["root"] / "access.log").read_text(), "the token itself is never logged"


def test_request_id_is_echoed_and_logged(server):
    mine = call(server, "GET", "/v1/models", headers={"X-Request-ID": "client-req-42"})
    assert mine.headers["x-request-id"] == "client-req-42"
    rid = call(server, "GET", "/v1/models").headers["x-request-id"]  # Serve's own id when the client sends none
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = {json.loads(line)["request_id"] for line in (server["root"] / "access.log").read_text().splitlines()}
        if {"client-req-42", rid} <= ids:
            return
        time.sleep(0.2)
    raise AssertionError("request ids missing from the access log")


def test_generate_answers_png_or_zip_when_asked(server):
    as_json = generate(server, n=1, seed=5, steps=2).json()
    one = call(
        server, "POST", "/v1/generate", json={"label": "benign", "seed": 5, "steps": 2}, headers={"Accept": "image/png"}
    )
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    assert one.content == base64.b64decode(as_json["images"][0]) and one.headers["x-busgen-seeds"] == "5"
    many = call(
        server,
        "POST",
        "/v1/generate",
        json={"label": "benign", "n": 3, "steps": 2},
        headers={"Accept": "application/zip"},
    )
    assert many.status_code == 200 and many.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(many.content)).namelist()
    assert names == ["seed-0.png", "seed-1.png", "seed-2.png"]
    refused = call(server, "POST", "/v1/generate", json={"label": "benign", "n": 2}, headers={"Accept": "image/png"})
    assert refused.status_code == 406 and "application/zip" in refused.text


def test_classify_several_files_in_one_request(server):
    from busgen.data.phantom import make_phantom_arrays

    images = make_phantom_arrays(3, 40, seed=1)[0]
    files = [("file", (f"{i}.png", encode_png(im), "image/png")) for i, im in enumerate(images)]
    resp = call(server, "POST", "/v1/classify", files=files)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert len(out["results"]) == 3 and out["classifier"] == "default"
    singles = [call(server, "POST", "/v1/classify", data=encode_png(im)).json()["probs"] for im in images]
    assert all(abs(r["probs"][k] - s[k]) < 1e-4 for r, s in zip(out["results"], singles) for k in s), (
        "batched with others or alone, an image gets the same probabilities"
    )
    too_many = [("file", (f"{i}.png", encode_png(images[0]), "image/png")) for i in range(LIMITS["max_n"] + 1)]
    assert call(server, "POST", "/v1/classify", files=too_many).status_code == 413
    assert call(server, "POST", "/v1/classify?model=nope", data=encode_png(images[0])).status_code == 404


def test_build_app_refuses_no_token_and_insecure_off_loopback(server, monkeypatch):
    import busgen.serve.app as serve_app

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    with pytest.raises(ValueError, match="no API token"):
        build_app(ServeArgs(generators="a=/m"))
    assert serve_app.running_http_host() == "127.0.0.1", "asked of the running Serve controller"
    build_app(ServeArgs(generators="a=/m", insecure_local=True))  # loopback + explicit flag: allowed
    monkeypatch.setattr(serve_app, "running_http_host", lambda: "0.0.0.0")  # as `serve run` with host 0.0.0.0
    with pytest.raises(ValueError, match="refusing to serve without an API token"):
        build_app(ServeArgs(generators="a=/m", insecure_local=True))
    monkeypatch.setenv("BUSGEN_GENERATORS", "a=/m")
    monkeypatch.setenv("BUSGEN_INSECURE_LOCAL", "1")
    with pytest.raises(ValueError, match="refusing"):
        build_app(serve_app.args_from_env())
    build_app(ServeArgs(generators="a=/m", token=TOKEN))  # a token is fine on any address


@pytest.mark.slow  # a bounded flood of requests
def test_flood_sheds_load_with_503_retry_after_then_recovers(server):
    """~10x what the small test queues hold, for a bounded time: only 200s and 503s, then normal service."""
    from concurrent.futures import ThreadPoolExecutor

    url, headers = server["url"] + "/v1/generate", {"Authorization": f"Bearer {TOKEN}"}
    body = {"label": "benign", "n": 4, "steps": 4}
    deadline = time.monotonic() + 8.0

    def client(_: int) -> list[tuple[int, str | None, float]]:
        out, session = [], requests.Session()
        while time.monotonic() < deadline and len(out) < 40:
            t0 = time.monotonic()
            resp = session.post(url, json=body, headers=headers, timeout=60)
            out.append((resp.status_code, resp.headers.get("retry-after"), time.monotonic() - t0))
        return out

    with ThreadPoolExecutor(48) as pool:
        results = [r for rs in pool.map(client, range(48)) for r in rs]
    statuses = {s for s, _, _ in results}
    shed = [(ra, t) for s, ra, t in results if s == 503]
    assert statuses <= {200, 503}, f"only success or load shedding, got {sorted(statuses)}"
    assert shed and 200 in statuses, (len(shed), statuses)
    assert all(ra is not None and int(ra) >= 1 for ra, _ in shed), "every 503 says when to retry"
    assert np.median([t for _, t in shed]) < 1.0, "shedding answers at once, not after queueing"
    time.sleep(1.0)
    still_answers(server)
