"""``POST /v1/generate`` through FastAPI's TestClient on the session's tiny real generator: the images are the
predictor's, pixel for pixel, alone or batched with other requests; errors; the explanation."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FAST = {"steps": 4}  # the tiny model's pictures mean nothing; few steps keep the tests quick


@pytest.fixture(scope="module")
def generator(generate_run):
    """The generator loaded on its own (not the service's instance): what the service must reproduce."""
    import vislang

    return vislang.load(generate_run)


def client_of(runs, **config):
    from fastapi.testclient import TestClient

    from vislang.serve import ServeConfig, create_app, load_service

    return TestClient(create_app(load_service(runs), ServeConfig(access_log=False, **config)),
                      raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(generate_run):
    with client_of([generate_run]) as c:
        yield c


def pixels(data_url: str) -> np.ndarray:
    """A ``data:image/png;base64,`` URL decoded to ``(H, W, 3)`` uint8."""
    from PIL import Image

    assert data_url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(data_url.partition(",")[2]))) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im).copy()


def expected(generator, prompt: str, **options) -> list[np.ndarray]:
    return [np.asarray(g.image) for g in generator.generate([prompt], warn=False, **options)]


def error_of(r) -> tuple[int, str, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "\n" not in body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return r.status_code, body["error"]["code"], body["error"]["message"]


def test_images_are_the_predictors_pixel_for_pixel(client, generator):
    r = client.post("/v1/generate", json={"prompt": "a red circle", "n": 3, "guidance": 2.5, "seed": 5, **FAST})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "run" and body["prompt"] == "a red circle" and body["warnings"] == []
    assert body["size"] == generator.image_size == 16 and "explanation" not in body
    assert body["options"] == {"n": 3, "guidance": 2.5, "steps": 4, "seed": 5, "sampler": "ddim"}
    assert [im["seed"] for im in body["images"]] == [5, 6, 7]
    got = [pixels(im["png"]) for im in body["images"]]
    want = expected(generator, "a red circle", n=3, guidance=2.5, seed=5, **FAST)
    assert all(g.shape == (16, 16, 3) for g in got)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[0], got[1])  # each sample its own noise

    # the DPM sampler, as a form, defaults for guidance and seed
    r = client.post("/v1/generate", data={"prompt": " a blue square ", "n": "2", "sampler": "dpm", **FAST})
    assert r.status_code == 200, r.text
    assert r.json()["prompt"] == "a blue square" and r.json()["options"]["guidance"] == 3.0
    for g, w in zip([pixels(im["png"]) for im in r.json()["images"]],
                    expected(generator, "a blue square", n=2, sampler="dpm", **FAST), strict=True):
        np.testing.assert_array_equal(g, w)


def test_requests_batched_together_keep_their_own_images(generate_run, generator):
    """Four concurrent requests of one options key run as one batch (the worker waits up to 10 s for the batch
    to fill); each gets exactly the images it gets alone, though drawing their samples in one UNet batch would
    change the last bits (measured on CPU: up to 2e-5, 19 8-bit values in 30,720 flipped)."""
    import torch

    from vislang.serve import load_service

    prompts = ["a red circle", "a blue square on the left", "a green triangle", "a red circle"]
    options = {"n": 2, "seed": 3, **FAST}
    service = load_service([generate_run])
    # the batch operation itself, before PNG rounding: each prompt's tensor is bit-identical to its call alone
    batch = service.models["run"].run(("generate", 2, 3.0, 4, 3, "ddim"), prompts)           # (2, 3, S, S) each
    for prompt, images in zip(prompts, batch, strict=True):
        assert torch.equal(images, generator.generate_tensor([prompt], **options))
    with client_of([generate_run], max_batch=4, max_wait_ms=10_000) as c, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda p: c.post("/v1/generate", json={"prompt": p, **options}), prompts))
        metrics = c.get("/metrics").text
    assert 'vislang_batch_size_count{model="run",op="generate"} 1.0' in metrics  # one batch...
    assert 'vislang_batch_size_sum{model="run",op="generate"} 4.0' in metrics    # ... of the four requests
    for prompt, r in zip(prompts, answers, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["prompt"] == prompt and [im["seed"] for im in r.json()["images"]] == [3, 4]
        for g, w in zip([pixels(im["png"]) for im in r.json()["images"]], expected(generator, prompt, **options),
                        strict=True):
            np.testing.assert_array_equal(g, w)


def test_field_errors(client, generator):
    from vislang.errors import VislangError

    with pytest.raises(VislangError) as empty:
        generator.check_prompts([""])
    ok = {"prompt": "a red circle", **FAST}
    cases = [
        ({"prompt": ""}, "invalid_field", str(empty.value)),
        ({"prompt": "   "}, "invalid_field", str(empty.value)),
        ({"prompt": 12}, "invalid_field", "prompt must be text, got int"),
        ({"prompt": ["a"]}, "invalid_field", "prompt must be text, got list"),
        ({}, "invalid_field", "field 'prompt' is missing"),
        ({"prompt": "x" * 1001}, "invalid_field", "field 'prompt' is too long"),
        ({**ok, "n": 0}, "invalid_field", "field 'n' must be between 1 and 16, got 0"),
        ({**ok, "n": 17}, "invalid_field", "field 'n' must be between 1 and 16"),
        ({**ok, "n": "two"}, "invalid_field", "field 'n' must be a whole number"),
        ({**ok, "n": 1.5}, "invalid_field", "field 'n' must be a whole number"),
        ({**ok, "steps": 0}, "invalid_field", "field 'steps' must be between 1 and 200"),
        ({**ok, "steps": 201}, "invalid_field", "field 'steps' must be between 1 and 200"),
        ({**ok, "guidance": -1}, "invalid_field", "field 'guidance' must be between 0 and 50"),
        ({**ok, "guidance": 50.5}, "invalid_field", "field 'guidance' must be between 0 and 50"),
        ({**ok, "guidance": "strong"}, "invalid_field", "field 'guidance' must be a number"),
        ({**ok, "seed": -1}, "invalid_field", "field 'seed' must be between 0 and"),
        ({**ok, "sampler": "euler"}, "invalid_field", "field 'sampler' must be one of ddim, dpm"),
        ({**ok, "explain": "maybe"}, "invalid_field", "field 'explain' must be true or false"),
        ({**ok, "model": "nope"}, "unknown_model", "no model named 'nope' is loaded"),
    ]
    for body, want_code, want_message in cases:
        status, code, message = error_of(client.post("/v1/generate", json=body))
        assert (status, code) == (404 if code == "unknown_model" else 422, want_code), body
        assert message.startswith(want_message), (body, message)


def test_an_over_long_prompt_is_answered_with_the_predictors_warning(client, generator):
    prompt = " ".join(["a small red circle"] * 20)
    want = generator.check_prompts([prompt])[0]
    assert want and "tokens long" in want
    r = client.post("/v1/generate", json={"prompt": prompt, "n": 1, **FAST})
    assert r.status_code == 200 and r.json()["warnings"] == [want]
    np.testing.assert_array_equal(pixels(r.json()["images"][0]["png"]), expected(generator, prompt, n=1, **FAST)[0])


def test_no_generator_is_404_and_another_tasks_model_422(retrieval_run, generate_run):
    with client_of([retrieval_run]) as c:
        assert error_of(c.post("/v1/generate", json={"prompt": "a red circle"})) == \
            (404, "no_model", "no generate model is loaded")
        assert c.get("/v1/models").json()["models"][0]["task"] == "retrieval"
    with client_of([generate_run, retrieval_run]) as c:
        names = {m["task"]: m["name"] for m in c.get("/v1/models").json()["models"]}
        assert error_of(c.post("/v1/generate", json={"prompt": "a red", "model": names["retrieval"]}))[:2] == \
            (422, "invalid_field")
        r = c.post("/v1/generate", json={"prompt": "a red circle", "model": names["generate"], "n": 1, **FAST})
        assert r.status_code == 200 and r.json()["model"] == names["generate"]


def test_explanation_is_the_predictors_cross_attention(client, generator):
    r = client.post("/v1/generate", json={"prompt": "a red circle", "n": 2, "seed": 7, "explain": True, **FAST})
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    want = generator.explain("a red circle", seed=7, **FAST)
    t, h, w = want.maps.shape
    assert ex["kind"] == "cross_attention" and ex["grid"] == [h, w] and ex["seed"] == 7
    assert ex["tokens"] == want.tokens and len(ex["maps"]) == t
    maps = np.array(ex["maps"])                                                     # (T, h, w)
    np.testing.assert_allclose(maps, want.maps.numpy(), atol=1e-6)
    np.testing.assert_allclose(maps.sum((1, 2)), 1.0, atol=1e-4)                    # each map sums to 1
    np.testing.assert_allclose(ex["weights"], want.weights.numpy(), atol=1e-4)
    np.testing.assert_array_equal(pixels(ex["image"]), np.asarray(want.image))     # the image explained: seed 7
    strip = pixels(ex["png"])
    assert strip.shape[0] > 128 and strip.shape[1] >= 128 * min(t + 1, 6)        # the image, then a panel a token


def test_openapi_and_models_list_the_generator(client):
    paths = client.get("/openapi.json").json()["paths"]
    schema = paths["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"prompt", "n", "guidance", "steps", "seed", "sampler", "model", "explain"} <= set(schema["properties"])
    from vislang.models.diffusion_unet import SAMPLERS

    assert schema["properties"]["sampler"]["enum"] == list(SAMPLERS)
    models = client.get("/v1/models").json()["models"]
    assert [(m["task"], m["default"]) for m in models] == [("generate", True)]
    assert client.get("/readyz").json() == {"status": "ready", "models": 1}
