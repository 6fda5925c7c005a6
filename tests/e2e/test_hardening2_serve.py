"""Serving hardening, round two: DNS rebinding with auth off, and server paths in error bodies.

Pure checks first (no Ray), then one real Serve app on 127.0.0.1 with auth off
(``insecure_local``), a working generator, a generator whose folder does not load,
a reference set and a gallery. Every request goes to 127.0.0.1; "foreign" hosts are
only the ``Host`` header a DNS-rebinding page would make a browser send.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers.hostile import deflated_bomb, save_random_classifier, write_gallery, write_reference
from helpers.models import export_untrained_tiny
from helpers.serve import serving

from busgen.data.imageio import encode_png
from busgen.serve.auth import BearerAuth, host_name
from busgen.serve.errors import RequestError

pytestmark = pytest.mark.timeout(240)

SIZE = 32
FOREIGN_HOSTS = ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "")


def test_host_names_parse_with_ports_and_ipv6_brackets():
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("LOCALHOST") == "localhost"
    assert host_name("[::1]:8000") == "::1" and host_name("::1") == "::1"
    assert host_name("attacker.example:80") == "attacker.example"
    assert host_name(None) == ""


def test_auth_off_accepts_only_loopback_hosts():
    auth = BearerAuth(None)
    for host in ("127.0.0.1:8000", "localhost", "[::1]:9"):
        assert auth.check(None, host) == "anonymous"
    for host in FOREIGN_HOSTS + (None,):
        with pytest.raises(RequestError) as err:
            auth.check(None, host)
        assert err.value.status_code == 421 and err.value.detail.startswith("error: ")


# The served application, auth off


def broken_generator(root, good):
    """A folder the registry accepts (class names, size) but loading refuses, naming its own path."""
    bad = root / "broken-model"
    shutil.copytree(good, bad)
    meta = json.loads((bad / "busgen.json").read_text())
    (bad / "busgen.json").write_text(json.dumps(meta | {"kind": "adapter"}))  # adapter fields missing
    return bad


def unfitted_generator(root):
    """A generator whose protection classifier stopped at fit accuracy 0.78 (the issue's 10-minute limit)."""
    from busgen.model import generator, protect

    folder = export_untrained_tiny(root / "unfitted", seed=1, size=SIZE)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=SIZE, width=8))
    record = {"fit_accuracy": 0.78, "fitted": False, "stopped": "time"}
    protect.save_protector(folder, net, {"generator_model_id": generator.weights_fingerprint(folder), **record})
    return folder


@pytest.fixture(scope="module")
def open_server(ray_local, tmp_path_factory):
    from busgen.serve.config import ServeArgs

    root = tmp_path_factory.mktemp("hardening2-serve")
    good = export_untrained_tiny(root / "g0", seed=0, size=SIZE)
    args = ServeArgs(
        generators={
            "base": str(good),
            "broken": str(broken_generator(root, good)),
            "unfitted": str(unfitted_generator(root)),
        },
        reference_parquet=str(write_reference(root / "reference.parquet")),
        galleries={"synthetic": str(write_gallery(root / "synthetic"))},
        classifier_dir=save_random_classifier(root / "clf"),
        insecure_local=True,
        access_log_fp=str(root / "access.log"),
        limits={"max_n": 2, "max_steps": 2, "default_steps": 2},
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 0.5, "max_batch_size": 4, "max_ongoing_requests": 4, "torch_threads": 1},
        classifier={"num_cpus": 0.25, "max_batch_size": 4, "max_ongoing_requests": 4, "torch_threads": 1},
    )
    with serving(args) as url:
        yield {"url": url, "root": root}


def ask(server, method: str, path: str, host: str | None = None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {}) | ({"Host": host} if host is not None else {})
    return requests.request(method, server["url"] + path, headers=headers, timeout=60, **kwargs)


def test_auth_off_answers_loopback_hosts_and_refuses_rebound_names_with_421(open_server):
    port = open_server["url"].rsplit(":", 1)[1]
    for host in (None, f"localhost:{port}"):
        assert ask(open_server, "GET", "/v1/models", host).status_code == 200, host
    assert ask(open_server, "GET", "/v1/gallery/synthetic").status_code == 200
    for host in FOREIGN_HOSTS:
        for method, path, body in [
            ("GET", "/v1/models", None),
            ("GET", "/v1/gallery/synthetic", None),
            ("POST", "/v1/generate", {"label": "benign", "nearest": True}),
            ("GET", "/ui/index.html", None),
            ("GET", "/v1/study/me", None),  # reader routes take no API token, but the Host check still holds
        ]:
            resp = ask(open_server, method, path, host, json=body)
            assert resp.status_code == 421, (host, path, resp.status_code)
            assert resp.json()["detail"].startswith("error: ") and "127.0.0.1" in resp.json()["detail"]
    assert ask(open_server, "GET", "/healthz").status_code == 200, "the service still answers"


def logged_lines(log: Path, request_id: str, within_s: float = 10.0) -> list[dict]:
    """The access-log lines of one request; the replica writes its line after answering, so poll (bounded)."""
    deadline = time.monotonic() + within_s
    while True:
        text = log.read_text() if log.is_file() else ""
        found = [json.loads(line) for line in text.splitlines() if json.loads(line)["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_model_that_fails_to_load_answers_one_sentence_and_logs_the_detail(open_server):
    root = str(open_server["root"])
    resp = ask(open_server, "POST", "/v1/generate", json={"label": "benign", "model": "broken"})
    detail, rid = resp.json()["detail"], resp.headers["x-request-id"]
    assert resp.status_code == 503
    assert detail.startswith("error: model 'broken' failed") and rid in detail
    assert root not in detail and "/" not in detail and "busgen.json" not in detail, "no server path"
    (logged,) = logged_lines(open_server["root"] / "access.log", rid)
    assert logged["status"] == 503 and "broken-model" in logged["error"] and "ModelLoadError" in logged["error"]
    assert ask(open_server, "POST", "/v1/generate", json={"label": "benign"}).status_code == 200


def test_a_request_the_model_cannot_serve_still_gets_its_reason_from_the_replica(open_server):
    resp = ask(open_server, "POST", "/v1/generate", json={"label": "benign", "protect": "cpsample"})
    assert resp.status_code == 422 and "protect=none" in resp.json()["detail"]


def test_protected_sampling_with_an_unfitted_classifier_is_refused_with_409(open_server):
    resp = ask(
        open_server, "POST", "/v1/generate", json={"label": "benign", "model": "unfitted", "protect": "cpsample"}
    )
    detail = resp.json()["detail"]
    assert resp.status_code == 409 and detail.startswith("error: ") and "busgen protect" in detail
    assert str(open_server["root"]) not in detail, "no server path"
    plain = ask(open_server, "POST", "/v1/generate", json={"label": "benign", "model": "unfitted"})
    assert plain.status_code == 200, "unprotected sampling from the same generator still works"


def test_a_deflate_bomb_upload_gets_413_from_the_classifier_replica_which_keeps_serving(open_server):
    bomb = deflated_bomb(1024)  # 1 MiB upload, 1 GiB inflated: the reproduction
    resp = ask(open_server, "POST", "/v1/classify", data=bomb, headers={"Content-Type": "application/dicom"})
    assert resp.status_code == 413 and "inflates beyond 64.0 MiB" in resp.json()["detail"]
    scan = encode_png(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8))
    ok = ask(open_server, "POST", "/v1/classify", data=scan, headers={"Content-Type": "image/png"})
    assert ok.status_code == 200 and set(ok.json()["probs"]) == {"benign", "malignant", "normal"}
