"""Online inference: a real Ray Serve HTTP endpoint on 127.0.0.1 with two tiny generators and a classifier.

One Serve application serves the whole module (start ~10 s). Every bad-input test
ends by checking that the service still answers. Pure helpers (args, auth, multipart)
are tested without Ray first.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest

from busgen.core.types import DEFAULT_SAMPLER, SAMPLERS
from busgen.data.imageio import encode_png
from busgen.serve.app import run_local
from busgen.serve.auth import TOKEN_ENV, TOKEN_FILE_ENV, BearerAuth, token_digest
from busgen.serve.config import DeploymentArgs, ServeArgs
from busgen.serve.errors import RequestError
from busgen.serve.guards import extract_upload
from busgen.serve.schemas import GenerateRequest

pytestmark = pytest.mark.timeout(240)  # fast suite (runs in CI); the whole module takes well under 90 s


TOKEN = "test-token-0123456789abcdef"


def test_args_parse_cli_strings_and_enforce_batching_rules(tmp_path):
    args = ServeArgs(generators="a=/m/a, b=/m/b", insecure_local="true")
    assert args.generators == {"a": "/m/a", "b": "/m/b"} and args.default_id == "a" and args.insecure_local
    assert ServeArgs(generators='{"x": "/m/x"}').generators == {"x": "/m/x"}
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        DeploymentArgs(max_batch_size=16, max_ongoing_requests=5)
    with pytest.raises(ValueError, match="max_n"):
        ServeArgs(generators="a=/m", limits={"max_n": 64}, generator={"max_batch_size": 32})
    with pytest.raises(ValueError, match="no generators"):
        ServeArgs()
    sampler = GenerateRequest.model_fields["sampler"]
    assert typing.get_args(sampler.annotation) == SAMPLERS and sampler.default == DEFAULT_SAMPLER


def test_token_resolution_refuses_missing_and_short_tokens(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    with pytest.raises(ValueError, match="no API token"):
        token_digest(ServeArgs(generators="a=/m"))
    with pytest.raises(ValueError, match="too short"):
        token_digest(ServeArgs(generators="a=/m", token="short"))
    assert token_digest(ServeArgs(generators="a=/m", insecure_local=True)) is None
    (tmp_path / "tok").write_text(TOKEN + "\n")
    auth = BearerAuth(token_digest(ServeArgs(generators="a=/m", token_file=str(tmp_path / "tok"))))
    auth.check(TOKEN)
    with pytest.raises(RequestError) as err:
        auth.check(TOKEN + "x")
    assert err.value.status_code == 401
    with pytest.raises(ValueError, match="loopback"):
        run_local({"a": "/m"}, host="0.0.0.0", insecure_local=True, blocking=False)


def test_multipart_extraction():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\nDATA\r\n--XyZ--\r\n"
    )
    assert extract_upload(body, "multipart/form-data; boundary=XyZ") == (b"\x89PNG\r\n\x1a\nDATA", "a.png")
    assert extract_upload(b"raw", "image/png") == (b"raw", "")
    with pytest.raises(RequestError, match="no file part"):
        extract_upload(
            body.split(b'--XyZ\r\nContent-Disposition: form-data; name="file"')[0] + b"--XyZ--\r\n",
            "multipart/form-data; boundary=XyZ",
        )
    noisy = encode_png(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))  # every byte value
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n\r\n' + noisy + b"\r\n--B--\r\n"
    assert extract_upload(body, "multipart/form-data; boundary=B")[0] == noisy
    nameless = b'--C\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + noisy + b"\r\n--C--\r\n"
    assert extract_upload(nameless, "multipart/form-data; boundary=C") == (noisy, "")
    with pytest.raises(RequestError, match="malformed multipart"):
        extract_upload(body, "multipart/form-data")  # no boundary
