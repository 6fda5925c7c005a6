"""CPSample plumbing: the sampler option, its contracts (determinism, batch invariance), files and errors.

Uses an untrained tiny export and an untrained protection classifier with threshold 0.5,
so guidance acts on every image at every step: the contracts are checked where the
protection term does the most, not where it is silent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from busgen.model import generator, protect
from busgen.testing.models import export_untrained

ON = {"protect": "cpsample", "protect_strength": 1.0, "protect_threshold": 0.5}


@pytest.fixture(scope="module")
def gen(tmp_path_factory, torch_one_thread):
    folder = export_untrained(tmp_path_factory.mktemp("model"), seed=0, size=32)
    model_id = generator.load(folder, device="cpu").model_id
    torch.manual_seed(0)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    protect.save_protector(folder, net, {"generator_model_id": model_id, "fit_accuracy": 1.0})
    return generator.load(folder, device="cpu")


def test_protection_changes_images_and_keeps_model_id(gen):
    off = gen.sample(["benign", "malignant"], steps=3, seed=1)
    on = gen.sample(["benign", "malignant"], steps=3, seed=1, **ON)
    assert np.abs(off.astype(int) - on).mean() > 0.5
    assert gen.model_id == generator.weights_fingerprint(gen.model_dir)  # protect/ is not part of the weights id
    assert gen.model_id == json.loads((gen.model_dir / "busgen.json").read_text())["model_id"]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
@pytest.mark.parametrize("guidance", [1.0, 1.8])
def test_protected_sampling_is_deterministic_and_batch_invariant(gen, sampler, guidance):
    kw = dict(steps=3, guidance=guidance, sampler=sampler, **ON)
    labels, seeds = ["benign", "malignant", "normal"], [5, 6, 7]
    batch = gen.sample(labels, boxes=[()] * 3, seeds=seeds, **kw)
    again = gen.sample(labels, boxes=[()] * 3, seeds=seeds, **kw)
    alone = gen.sample(["normal"], boxes=[()], seeds=[7], **kw)
    split = gen.sample(labels, boxes=[()] * 3, seeds=seeds, batch_size=2, **kw)
    assert np.array_equal(batch, again)
    assert np.abs(batch[2].astype(int) - alone[0]).max() <= 2
    assert np.abs(batch.astype(int) - split).max() <= 2


def test_zero_strength_is_unprotected_sampling(gen):
    off = gen.sample(["benign"], steps=3, seed=2)
    zero = gen.sample(["benign"], steps=3, seed=2, protect="cpsample", protect_strength=0.0)
    assert np.array_equal(off, zero)


def test_cpsample_without_a_classifier_names_the_remedy(tmp_path):
    g = generator.load(export_untrained(tmp_path / "m", size=32), device="cpu")
    with pytest.raises(protect.ProtectError, match="busgen protect"):
        g.sample(["benign"], steps=2, protect="cpsample")


def test_classifier_for_other_weights_or_changed_file_is_refused(tmp_path):
    folder = export_untrained(tmp_path / "m", size=32)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    protect.save_protector(folder, net, {"generator_model_id": "someoneelse", "fit_accuracy": 1.0})
    with pytest.raises(protect.ProtectError, match="trained for generator someoneelse"):
        generator.load(folder, device="cpu").sample(["benign"], steps=2, protect="cpsample")
    (folder / "protect" / protect.PROTECT_WEIGHTS).write_bytes(b"tampered")
    with pytest.raises(protect.ProtectError, match="changed after training"):
        protect.load_protector(folder)


def unfitted(folder, **record):
    """A protection classifier whose protect.json records the issue's fit: 0.78 when the 10-minute limit hit."""
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    model_id = generator.weights_fingerprint(folder)
    provenance = {"fit_accuracy": 0.78, "fitted": False, "stopped": "time", "train": {"max_minutes": 10.0}}
    protect.save_protector(folder, net, {"generator_model_id": model_id, **provenance, **record})
    return folder


def test_protected_sampling_with_an_unfitted_classifier_is_refused_naming_the_remedy(tmp_path):
    folder = unfitted(export_untrained(tmp_path / "m", size=32))
    g = generator.load(folder, device="cpu")
    with pytest.raises(protect.ProtectFitError) as err:
        g.sample(["benign"], steps=2, protect="cpsample")
    message = str(err.value)
    assert "0.780" in message and "below the floor 0.95" in message and "stopped: time" in message
    assert "busgen protect --model" in message and "max_minutes=20.0" in message and "protect_min_fit" in message
    with pytest.raises(protect.ProtectFitError):
        protect.check_protect_fit(folder)  # what the CLI and the generate stage call before any sampling
    assert g.sample(["benign"], steps=2).shape == (1, 32, 32), "unprotected sampling is unaffected"
    lowered = g.sample(["benign"], steps=2, protect="cpsample", protect_min_fit=0.75)  # the explicit override
    assert lowered.shape == (1, 32, 32)
    assert protect.check_protect_fit(folder, 0.75)["fit_accuracy"] == 0.78


def test_a_classifier_that_does_not_record_its_fit_is_refused(tmp_path):
    folder = export_untrained(tmp_path / "m", size=32)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=32, width=8))
    protect.save_protector(folder, net, {"generator_model_id": generator.weights_fingerprint(folder)})
    with pytest.raises(protect.ProtectFitError, match="accuracy unrecorded"):
        generator.load(folder, device="cpu").sample(["benign"], steps=2, protect="cpsample")


def test_serve_refuses_an_unfitted_classifier_with_409_and_no_server_path(tmp_path):
    """The generator deployment's handler, called directly (no Ray): the batch reports 409, the handler raises it."""
    import asyncio

    from busgen.serve.batching import sample_jobs
    from busgen.serve.deployments import GeneratorDeployment
    from busgen.serve.errors import RequestError

    g = generator.load(unfitted(export_untrained(tmp_path / "m", size=32)), device="cpu")
    base = {"label": "benign", "n": 1, "seed": 3, "steps": 2, "guidance": None, "sampler": "ddim", "domain": None}
    jobs = [{**base, "box": None, "protect": "cpsample"}, {**base, "box": None, "protect": "none"}]
    refused, served = sample_jobs(g, jobs, default_guidance=1.0, batch_size=4, protect_min_fit=0.95)
    assert refused["status"] == 409 and "busgen protect" in refused["error"] and "/" not in refused["error"]
    assert refused["error"].startswith("error: ") and len(served["images"]) == 1, "the other job is served"
    ok = sample_jobs(g, jobs[:1], default_guidance=1.0, batch_size=4, protect_min_fit=0.5)[0]  # operator's floor
    assert len(ok["images"]) == 1

    class Replica:  # what GeneratorDeployment.generate needs of self: the batch method
        async def _generate_batch(self, job):
            return refused

    handler = GeneratorDeployment.func_or_class.generate
    with pytest.raises(RequestError) as err:
        asyncio.run(handler(Replica(), jobs[0]))
    assert err.value.status_code == 409 and err.value.detail == refused["error"]


def test_settings_are_validated():
    with pytest.raises(ValueError):
        protect.ProtectSettings(protect="dp")
    with pytest.raises(ValueError):
        protect.ProtectSettings(protect="cpsample", threshold=0.3)
    with pytest.raises(ValueError):
        protect.ProtectSettings(protect="cpsample", strength=-1)
    with pytest.raises(ValueError):
        protect.ProtectSettings(protect="cpsample", min_fit=1.5)


def test_serve_batches_pass_protection_through_and_group_by_it(gen):
    """A Serve generate batch: protected and unprotected jobs sample separately, each as asked."""
    from busgen.serve.batching import sample_jobs

    base = {"label": "benign", "n": 2, "seed": 3, "steps": 3, "guidance": None, "sampler": "ddim", "domain": None}
    jobs = [
        {**base, "box": None, "protect": "none"},
        {**base, "box": None, "protect": "cpsample", "protect_strength": 1.0, "protect_threshold": 0.5},
    ]
    off, on = sample_jobs(gen, jobs, default_guidance=1.0, batch_size=4)
    assert (off["protect"], on["protect"]) == ("none", "cpsample")
    direct = gen.sample(["benign"] * 2, steps=3, guidance=1.0, seeds=[3, 4], **ON)
    np.testing.assert_array_equal(on["images"], direct)
    assert np.abs(off["images"].astype(int) - on["images"]).mean() > 0.5


def test_serve_request_schema_accepts_cpsample_settings():
    from pydantic import ValidationError

    from busgen.serve.schemas import GenerateRequest

    req = GenerateRequest(label="benign", protect="cpsample", protect_strength=10.0, protect_threshold=0.9)
    assert (req.protect, req.protect_strength, req.protect_threshold) == ("cpsample", 10.0, 0.9)
    with pytest.raises(ValidationError):
        GenerateRequest(label="benign", protect="cpsample", protect_threshold=0.3)


class _MeanLogit(torch.nn.Module):
    """A stand-in classifier: logit = k * mean(x_t); counts its calls."""

    def __init__(self, k: float):
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, x, t):
        self.calls += 1
        return self.k * x.flatten(1).mean(1)


def _batch():
    x = torch.stack([torch.full((1, 8, 8), 0.5), torch.zeros(1, 8, 8)])  # image 0: confident; image 1: sigmoid(0)=0.5
    return x, torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_relative_form_gates_each_image_by_its_own_confidence_and_has_a_relative_size():
    abar = torch.linspace(0.999, 0.01, 1000)
    x, eps = _batch()
    out = {}
    for k in (10.0, 1000.0):  # logit scales 100x apart: the normalised push is the same
        term = protect.cpsample_term(_MeanLogit(k), abar, strength=0.2, threshold=0.8, form="relative")
        out[k] = term(x, torch.tensor(500), eps)
    for shifted in out.values():
        assert torch.equal(shifted[1], eps[1])  # the unsure image is left exactly as it was
        rms = lambda v: float(v.pow(2).mean().sqrt())  # noqa: E731
        assert rms(shifted[0] - eps[0]) == pytest.approx(0.2 * rms(eps[0]), rel=1e-4)
        assert (shifted[0] - eps[0]).mean() > 0  # eps up = x0 prediction down: away from the confident label
    torch.testing.assert_close(out[10.0], out[1000.0])


def _paper_push(k: float, x: torch.Tensor, t: int, abar: torch.Tensor, s: float) -> torch.Tensor:
    """The paper's step, computed independently: -s * sqrt(1 - abar_t) * grad log p(other label | x_t)."""
    xg = x.clone().requires_grad_(True)
    logit = _MeanLogit(k)(xg, None)
    grad = torch.autograd.grad(torch.nn.functional.logsigmoid(-logit.abs()).sum(), xg)[0]
    return -s * float(1 - abar[t]) ** 0.5 * grad


def test_paper_form_is_silent_below_its_near_certainty_gate():
    """Gate 1 - alpha = 0.999 (alpha = 0.001, the paper's figure 1): confidence 0.998 is left alone, 0.9995 is not."""
    abar = torch.linspace(0.999, 0.01, 1000)
    eps = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    below, above = torch.logit(torch.tensor(0.998)).item(), torch.logit(torch.tensor(0.9995)).item()
    x = torch.stack([torch.full((1, 8, 8), below), torch.full((1, 8, 8), -above)])  # logit = mean(x) (k = 1)
    out = protect.cpsample_term(_MeanLogit(1.0), abar, strength=1000.0, threshold=0.999)(x, torch.tensor(500), eps)
    assert torch.equal(out[0], eps[0]), "confident, but not near-certain: untouched"
    torch.testing.assert_close(out[1] - eps[1], _paper_push(1.0, x[1:], 500, abar, 1000.0)[0])
    assert (out[1] - eps[1]).mean() < 0, "logit < 0 (label 0 predicted): eps down = x0 up, toward label 1"
    assert protect.ProtectSettings(protect="cpsample").threshold == 0.999, "the default gate is the paper's"


def test_paper_form_push_is_the_classifier_gradient_scaled_by_s_and_the_noise_level():
    """d_eps = -s sqrt(1 - abar_t) grad log p(other label): it fades as t -> 0 and follows the logit's steepness."""
    abar = torch.linspace(0.9999, 0.01, 1000)
    x, eps = _batch()
    pushes = {}
    for t in (20, 500, 980):
        for k, s in ((10.0, 1000.0), (10.0, 100.0), (40.0, 1000.0)):
            out = protect.cpsample_term(_MeanLogit(k), abar, strength=s, threshold=0.9)(x, torch.tensor(t), eps)
            pushes[t, k, s] = out - eps
            torch.testing.assert_close(pushes[t, k, s][0], _paper_push(k, x[:1], t, abar, s)[0])
    ratio = lambda a, b: float(pushes[a].norm() / pushes[b].norm())  # noqa: E731
    noise = lambda t: float(1 - abar[t]) ** 0.5  # noqa: E731
    assert ratio((20, 10.0, 1000.0), (980, 10.0, 1000.0)) == pytest.approx(noise(20) / noise(980), rel=1e-5)
    assert ratio((500, 10.0, 1000.0), (500, 10.0, 100.0)) == pytest.approx(10.0, rel=1e-5)
    assert ratio((500, 40.0, 1000.0), (500, 10.0, 1000.0)) > 3.9, "a steeper logit (a sharper memory) pushes harder"


def test_paper_form_treats_each_image_on_its_own():
    """The same image gets the same push alone, first or last in a batch, whatever its neighbours are."""
    torch.manual_seed(0)
    net = protect.ProtectionClassifier(protect.ProtectNetConfig(image_size=16, width=8)).eval()
    abar = torch.linspace(0.999, 0.01, 1000)
    term = protect.cpsample_term(net, abar, strength=1000.0, threshold=0.5)  # an untrained net: gate open for all
    x, eps = torch.randn(5, 1, 16, 16), torch.randn(5, 1, 16, 16)
    batch = term(x, torch.tensor(300), eps)
    assert not torch.equal(batch, eps)
    close = dict(atol=1e-3, rtol=1e-3)  # float32 convolutions differ by batch shape at 1e-7; s = 1000 scales that up
    for i in range(5):
        torch.testing.assert_close(term(x[i : i + 1], torch.tensor(300), eps[i : i + 1])[0], batch[i], **close)
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(term(x[perm], torch.tensor(300), eps[perm]), batch[perm], **close)


def test_the_relative_form_refuses_a_strength_in_the_paper_units():
    with pytest.raises(ValueError, match="protect_form=relative takes a strength in units"):
        protect.ProtectSettings(protect="cpsample", form="relative", strength=1000.0)
    assert protect.ProtectSettings(protect="cpsample", form="relative", strength=0.85).form == "relative"


def test_outside_the_window_the_classifier_is_not_run():
    abar = torch.linspace(0.999, 0.01, 1000)
    x, eps = _batch()
    clf = _MeanLogit(10.0)
    term = protect.cpsample_term(clf, abar, strength=0.2, threshold=0.8, window=(0.3, 0.7))
    assert term(x, torch.tensor(900), eps) is eps and term(x, torch.tensor(100), eps) is eps
    assert clf.calls == 0
    assert not torch.equal(term(x, torch.tensor(500), eps), eps) and clf.calls == 1
    with pytest.raises(ValueError, match="window"):
        protect.ProtectSettings(protect="cpsample", window=(0.8, 0.2))


def test_the_window_ends_where_the_classifier_was_trained():
    trained = {"train": {"train_t_max": 400}}  # protect.json of a classifier trained on t < 400
    assert protect.trained_window((0.0, 1.0), trained, 1000) == (0.0, 0.4)
    assert protect.trained_window((0.1, 0.3), trained, 1000) == (0.1, 0.3)
    assert protect.trained_window((0.0, 1.0), {"train": {"train_t_max": None}}, 1000) == (0.0, 1.0)


def test_a_protected_set_records_the_fit_and_a_lowered_floor_in_its_manifest(tmp_path):
    from busgen.generate.config import GenerateConfig
    from busgen.generate.store import protect_record

    folder = unfitted(export_untrained(tmp_path / "m", size=32))
    cfg = GenerateConfig(model=str(folder), out=str(tmp_path / "syn"), protect="cpsample", protect_min_fit=0.75)
    record = protect_record(cfg)["protection"]
    assert (record["fit_accuracy"], record["min_fit_accuracy"], record["floor_lowered"]) == (0.78, 0.75, True)
    assert protect_record(cfg.model_copy(update={"protect": "none"})) == {}
