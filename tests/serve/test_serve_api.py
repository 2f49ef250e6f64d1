"""The service's endpoints and errors through FastAPI's TestClient, on tiny real models and real image files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from vislang.inference import load

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def service(serve_runs, serve_index):
    from vislang.serve import load_service

    return load_service([serve_runs["caption"], serve_runs["vqa"], serve_runs["classify"]], serve_index)


@pytest.fixture(scope="module")
def client(service):
    from fastapi.testclient import TestClient

    from vislang.serve import ServeConfig, create_app

    app = create_app(service, ServeConfig(max_body_bytes=64 * 1024, access_log=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def png_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def upload(path: Path) -> dict:
    return {"image": (Path(path).name, png_bytes(path), "image/png")}


def error_of(r) -> tuple[int, str, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in body["error"]["message"] and "\n" not in body["error"]["message"]
    return r.status_code, body["error"]["code"], body["error"]["message"]


# ------------------------------------------------------------------------------------------------ service state

def test_health_ready_and_models(client, service, serve_index):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "models": 4}
    body = client.get("/v1/models").json()
    tasks = {m["name"]: m["task"] for m in body["models"]}
    assert sorted(tasks.values()) == ["caption", "classify", "retrieval", "vqa"]
    assert all(m["default"] for m in body["models"]) and all(m["summary"] for m in body["models"])
    assert body["index"] == {"size": 6, "modality": "image", "model": service.index_model, "kind": "flat"}
    assert tasks[service.index_model] == "retrieval"  # the index's model was loaded from the path it records


def test_openapi_lists_every_endpoint_and_no_cdn_docs_page(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/caption", "/v1/search", "/v1/embed", "/v1/ask", "/v1/classify", "/v1/images/{item_id}",
              "/v1/generate", "/v1/models", "/healthz", "/readyz"):
        assert p in paths, p
    assert "multipart/form-data" in paths["/v1/caption"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # swagger's page would load its assets from a CDN


# ------------------------------------------------------------------------------------------------- predicting

def test_caption_matches_the_predictor(client, serve_runs, serve_pictures):
    r = client.post("/v1/caption", files=upload(serve_pictures[0]), data={"beam": "2", "length_penalty": "1"})
    assert r.status_code == 200, r.text
    want = load(serve_runs["caption"]).caption([serve_pictures[0]], beam=2, length_penalty=1.0)[0]
    assert r.json()["caption"] == want.text and r.json()["words"] == want.words
    assert r.json()["score"] == pytest.approx(want.score, abs=1e-3)


def test_json_body_with_base64_image_equals_the_form(client, serve_pictures):
    b64 = base64.b64encode(png_bytes(serve_pictures[1])).decode()
    a = client.post("/v1/caption", json={"image_base64": b64, "beam": 1}).json()
    b = client.post("/v1/caption", files=upload(serve_pictures[1]), data={"beam": "1"}).json()
    c = client.post("/v1/caption", json={"image_base64": "data:image/png;base64," + b64, "beam": 1}).json()
    assert a == b == c


def test_search_by_text_and_by_image_are_the_exact_ranking(client, service, serve_pictures):
    emb = service.models[service.index_model].predictor
    r = client.post("/v1/search", data={"text": "a red circle", "k": "3"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    scores = (emb.embed_texts(["a red circle"]) @ emb.embed_images(serve_pictures).T)[0]
    order = scores.argsort(descending=True)[:3].tolist()
    assert [h["id"] for h in hits] == [serve_pictures[i].name for i in order]
    assert [h["score"] for h in hits] == pytest.approx([float(scores[i]) for i in order], abs=1e-5)
    assert all(h["thumbnail"] == f"/v1/images/{h['id']}" and "path" not in h for h in hits)
    by_image = client.post("/v1/search", files=upload(serve_pictures[2]), data={"k": "1"}).json()["hits"]
    assert by_image[0]["id"] == serve_pictures[2].name and by_image[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_indexed_images_are_served_and_nothing_else(client, serve_pictures, tmp_path):
    r = client.get(f"/v1/images/{serve_pictures[0].name}")
    assert r.status_code == 200 and r.content == png_bytes(serve_pictures[0]) and r.headers["content-type"] == "image/png"
    for bad in ("nope.png", "../../etc/passwd", str(serve_pictures[0])):
        status, code, _ = error_of(client.get(f"/v1/images/{bad}"))
        assert status == 404, bad


def test_embed_text_and_image(client, service, serve_pictures):
    emb = service.models[service.index_model].predictor
    t = client.post("/v1/embed", json={"text": "a blue triangle"}).json()
    assert t["modality"] == "text" and t["dim"] == emb.dim
    assert t["embedding"] == pytest.approx(emb.embed_texts(["a blue triangle"])[0].tolist(), abs=1e-5)
    i = client.post("/v1/embed", files=upload(serve_pictures[3])).json()
    assert i["modality"] == "image"
    assert i["embedding"] == pytest.approx(emb.embed_images([serve_pictures[3]])[0].tolist(), abs=1e-5)


def test_ask_and_classify_match_their_predictors(client, serve_runs, serve_pictures):
    r = client.post("/v1/ask", files=upload(serve_pictures[0]), data={"question": "what color is the circle?",
                                                                     "k": "3"})
    assert r.status_code == 200, r.text
    want = load(serve_runs["vqa"]).ask(serve_pictures[0], ["what color is the circle?"], k=3)[0]
    assert r.json()["answer"] == want.answer and len(r.json()["top"]) == 3
    assert r.json()["confidence"] == pytest.approx(want.confidence, abs=1e-3)
    c = client.post("/v1/classify", files=upload(serve_pictures[1]), data={"text": "green", "k": "2"})
    assert c.status_code == 200, c.text
    top, seen = load(serve_runs["classify"]).classify(serve_pictures[1], "green", k=2)
    assert c.json()["label"] == top[0][0] and c.json()["text_seen"] == seen
    assert [t["label"] for t in c.json()["top"]] == [t[0] for t in top]
    empty_text = client.post("/v1/classify", files=upload(serve_pictures[1]))
    assert empty_text.status_code == 200  # the text beside the image may be empty


# ------------------------------------------------------------------------------------------------------ errors

def test_bad_images_are_422_with_the_loaders_message(client, serve_pictures, tmp_path):
    truncated = png_bytes(serve_pictures[0])[:120]
    cases = {b"this is not an image": "not", truncated: "", b"": "empty"}
    for data, word in cases.items():
        status, code, message = error_of(client.post("/v1/caption", files={"image": ("x.png", data, "image/png")}))
        assert (status, code) == (422, "invalid_image") and message.startswith("image: ") and word in message


def test_decompression_bomb_is_refused_before_decoding(client, monkeypatch):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, format="PNG")  # 9 Mpx of zeros: a few KB on the wire
    monkeypatch.setenv("VISLANG_MAX_IMAGE_PIXELS", "1000000")
    status, code, message = error_of(client.post("/v1/caption", files={"image": ("b.png", buf.getvalue(), "image/png")}))
    assert (status, code) == (422, "invalid_image") and "too large" in message


def test_field_errors(client, serve_pictures):
    img = upload(serve_pictures[0])
    cases = [
        ("/v1/search", {"data": {"text": ""}}, 422, "invalid_field"),
        ("/v1/search", {"data": {"text": "x" * 1001}}, 422, "invalid_field"),
        ("/v1/search", {"data": {"text": "red", "k": "0"}}, 422, "invalid_field"),
        ("/v1/search", {"data": {"text": "red", "k": "101"}}, 422, "invalid_field"),
        ("/v1/search", {"data": {"text": "red", "k": "two"}}, 422, "invalid_field"),
        ("/v1/search", {"data": {}}, 400, "bad_request"),
        ("/v1/search", {"data": {"text": "red"}, "files": img}, 400, "bad_request"),
        ("/v1/caption", {"data": {"beam": "11"}, "files": img}, 422, "invalid_field"),
        ("/v1/caption", {"data": {"explain": "maybe"}, "files": img}, 422, "invalid_field"),
        ("/v1/caption", {"data": {}}, 422, "invalid_field"),
        ("/v1/ask", {"data": {"question": "  "}, "files": img}, 422, "invalid_field"),
        ("/v1/ask", {"data": {"question": "?!"}, "files": img}, 422, "invalid_field"),
        ("/v1/caption", {"data": {"model": "nope"}, "files": img}, 404, "unknown_model"),
        ("/v1/ask", {"data": {"question": "what?", "model": "cap"}, "files": img}, 422, "invalid_field"),
        ("/v1/nothing", {"data": {}}, 404, "not_found"),
    ]
    for path, kwargs, want_status, want_code in cases:
        status, code, _ = error_of(client.post(path, **kwargs))
        assert (status, code) == (want_status, want_code), (path, kwargs.get("data"))
    assert error_of(client.get("/v1/caption"))[:2] == (405, "method_not_allowed")


def test_body_content_type_and_json_errors(client, serve_pictures):
    big = {"image": ("big.png", b"\0" * (65 * 1024), "image/png")}
    assert error_of(client.post("/v1/caption", files=big))[:2] == (413, "too_large")
    assert error_of(client.post("/v1/caption", content=b"\0" * 100, headers={"content-type": "image/png"}))[:2] \
        == (415, "unsupported_media_type")
    assert error_of(client.post("/v1/caption", content=b"{not json", headers={"content-type": "application/json"})
                    )[:2] == (400, "bad_request")
    assert error_of(client.post("/v1/caption", json={"image_base64": "***"}))[:2] == (400, "bad_request")
    assert error_of(client.post("/v1/caption", json=[1, 2]))[:2] == (400, "bad_request")


def test_unknown_task_and_no_index(serve_runs):
    from fastapi.testclient import TestClient

    from vislang.serve import ServeConfig, create_app, load_service

    app = create_app(load_service([serve_runs["caption"]]), ServeConfig(access_log=False))
    with TestClient(app) as c:
        assert error_of(c.post("/v1/search", data={"text": "red"}))[:2] == (404, "no_index")
        assert error_of(c.post("/v1/embed", data={"text": "red"}))[:2] == (404, "no_model")


def test_token_guards_v1_and_metrics(serve_runs, serve_pictures):
    from fastapi.testclient import TestClient

    from vislang.serve import ServeConfig, create_app, load_service

    app = create_app(load_service([serve_runs["caption"]]), ServeConfig(token="s3cret", access_log=False))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        for r in (c.get("/v1/models"), c.get("/metrics"), c.post("/v1/caption", files=upload(serve_pictures[0])),
                  c.get("/v1/models", headers={"Authorization": "Bearer wrong"})):
            assert error_of(r)[:2] == (401, "unauthorized") and r.headers["www-authenticate"] == "Bearer"
        ok = c.post("/v1/caption", files=upload(serve_pictures[0]), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_load_errors_are_one_line(serve_runs, serve_index, other_run, tmp_path):
    from vislang.errors import VislangError
    from vislang.serve import load_service

    with pytest.raises(VislangError, match="no such run"):
        load_service([tmp_path / "missing"])
    with pytest.raises(VislangError, match="embedded by model .* which is not loaded"):
        load_service([other_run], serve_index)


def test_metrics_count_requests_batches_and_queue(client, serve_pictures):
    client.post("/v1/caption", files=upload(serve_pictures[0]))
    text = client.get("/metrics").text
    assert 'vislang_requests_total{endpoint="/v1/caption",status="200"}' in text
    assert 'vislang_request_seconds_bucket{endpoint="/v1/caption"' in text
    assert 'vislang_batch_size_count{model="cap",op="caption"}' in text
    assert 'vislang_queue_depth{model="cap"} 0.0' in text


def test_internal_errors_are_500_with_one_line(client, service, monkeypatch):
    cap = service.models["cap"]

    def broken(*a, **k):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(cap.predictor, "iter_captions", broken)
    status, code, message = error_of(client.post("/v1/caption", files={"image": ("a.png", _png(), "image/png")}))
    assert status == 500 and code == "internal" and "boom" not in message


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 32), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_page_is_served_without_external_urls(client):
    r = client.get("/")
    if r.status_code == 404:
        pytest.skip("the page is not built yet")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for asset in ["/", *json.loads(json.dumps([]))]:
        assert "http://" not in client.get(asset).text.replace("http://127.0.0.1", "")


# ------------------------------------------------------------------------------------------------ explanations

def _png_of(data_url: str) -> bytes:
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.partition(",")[2])


def test_caption_explanation_is_the_per_word_attention(client, serve_runs, serve_pictures):
    r = client.post("/v1/caption", files=upload(serve_pictures[0]), data={"beam": "1", "explain": "true"}).json()
    ex = r["explanation"]
    want = load(serve_runs["caption"]).caption([serve_pictures[0]], beam=1)[0]
    h, w = want.attention.shape[1:]
    assert ex["grid"] == [h, w] and len(ex["maps"]) == want.attention.shape[0]
    assert [v for row in ex["maps"][0] for v in row] == pytest.approx(want.attention[0].flatten().tolist(), abs=1e-3)
    assert _png_of(ex["png"])[:4] == b"\x89PNG"


def test_search_explanation_maps_average_to_the_score_and_move_with_the_query(client, serve_pictures):
    def maps(text):
        hits = client.post("/v1/search", data={"text": text, "k": "6", "explain": "true"}).json()["hits"]
        return {h["id"]: (h["score"], h["explanation"]) for h in hits}

    red, green = maps("a red circle"), maps("a green square")
    for image_id, (score, ex) in red.items():
        h, w = ex["grid"]
        flat = [v for row in ex["map"] for v in row]
        assert len(ex["map"]) == h and len(flat) == h * w
        assert sum(flat) / len(flat) == pytest.approx(score, abs=1e-3)  # the score, split over the regions
        assert _png_of(ex["png"])[:4] == b"\x89PNG"
        assert ex["map"] != green[image_id][1]["map"]  # another query, another map of the same image
    by_image = client.post("/v1/search", files=upload(serve_pictures[2]), data={"k": "2", "explain": "1"}).json()
    assert [len(h["explanation"]["map"]) for h in by_image["hits"]] == [h, h]


def test_ask_and_classify_explanations(client, serve_pictures):
    ask = client.post("/v1/ask", files=upload(serve_pictures[0]),
                      data={"question": "what color is the circle?", "explain": "true"}).json()
    ex = ask["explanation"]
    assert ex["kind"] == "attention" and sum(v for row in ex["map"] for v in row) == pytest.approx(1, abs=1e-2)
    other = client.post("/v1/ask", files=upload(serve_pictures[0]),
                        data={"question": "how many objects are there?", "explain": "true"}).json()
    assert other["explanation"]["map"] != ex["map"]  # the attention follows the question
    cls = client.post("/v1/classify", files=upload(serve_pictures[1]), data={"text": "green", "explain": "true"})
    ex = cls.json()["explanation"]
    assert sum(ex["modality_weights"].values()) == pytest.approx(1, abs=1e-3)
    assert set(ex["modality_weights"]) == {"image", "text"} and "occlusion" in ex["method"]  # late fusion
    assert sum(v for row in ex["map"] for v in row) == pytest.approx(1, abs=1e-2) or not any(
        v for row in ex["map"] for v in row)
    assert _png_of(ex["png"])[:4] == b"\x89PNG"
