"""Micro-batching, the bounded queue and the request timeout, with real models behind a gate that holds the
model's worker thread (so the queue fills deterministically)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/png")}


@pytest.fixture
def gated(serve_runs, monkeypatch):
    """A caption service whose model waits for ``gate`` before each batch; ``entered`` is set when one waits."""
    from vislang.serve import load_service

    service = load_service([serve_runs["caption"]])
    pred = service.models["cap"].predictor
    real = pred.iter_captions
    gate, entered = threading.Event(), threading.Event()

    def held(*args, **kwargs):
        entered.set()
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(pred, "iter_captions", held)
    return service, gate, entered


def client_of(service, **config):
    from fastapi.testclient import TestClient

    from vislang.serve import ServeConfig, create_app

    return TestClient(create_app(service, ServeConfig(access_log=False, **config)), raise_server_exceptions=False)


def test_concurrent_requests_share_batches_and_get_their_own_answers(gated, serve_pictures):
    from vislang.inference import load

    service, gate, entered = gated
    pictures = serve_pictures[:6]
    with client_of(service, max_batch=8, max_wait_ms=50) as c, ThreadPoolExecutor(7) as pool:
        first = pool.submit(c.post, "/v1/caption", files=upload(pictures[0]), data={"beam": "1"})
        assert entered.wait(30)  # the first request's batch holds the model; the others queue up behind it
        rest = [pool.submit(c.post, "/v1/caption", files=upload(p), data={"beam": "1"}) for p in pictures[1:]]
        while service.models["cap"].batcher.depth < len(rest):
            threading.Event().wait(0.01)
        gate.set()
        answers = [first.result().json(), *(f.result().json() for f in rest)]
        metrics = c.get("/metrics").text
    want = [cap.text for cap in load(service.models["cap"].path).caption(pictures, beam=1)]
    assert [a["caption"] for a in answers] == want
    # two batches: the first request alone, then the five that waited behind it, together
    assert 'vislang_batch_size_count{model="cap",op="caption"} 2.0' in metrics
    assert 'vislang_batch_size_sum{model="cap",op="caption"} 6.0' in metrics


def test_requests_with_other_options_run_in_their_own_batch(gated, serve_pictures):
    service, gate, entered = gated
    with client_of(service, max_batch=8) as c, ThreadPoolExecutor(4) as pool:
        first = pool.submit(c.post, "/v1/caption", files=upload(serve_pictures[0]))
        assert entered.wait(30)
        rest = [pool.submit(c.post, "/v1/caption", files=upload(serve_pictures[1]), data={"beam": str(b)})
                for b in (1, 1, 2)]
        while service.models["cap"].batcher.depth < 3:
            threading.Event().wait(0.01)
        gate.set()
        assert all(f.result().status_code == 200 for f in [first, *rest])
        metrics = c.get("/metrics").text
    assert 'vislang_batch_size_count{model="cap",op="caption"} 3.0' in metrics  # [first], [beam 1 x2], [beam 2]


def test_a_full_queue_answers_503_with_retry_after(gated, serve_pictures):
    service, gate, entered = gated
    with client_of(service, max_batch=1, queue_size=1) as c, ThreadPoolExecutor(3) as pool:
        first = pool.submit(c.post, "/v1/caption", files=upload(serve_pictures[0]))
        assert entered.wait(30)
        second = pool.submit(c.post, "/v1/caption", files=upload(serve_pictures[1]))
        while service.models["cap"].batcher.depth < 1:
            threading.Event().wait(0.01)
        third = c.post("/v1/caption", files=upload(serve_pictures[2]))
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "busy"
        gate.set()
        assert first.result().status_code == second.result().status_code == 200


def test_a_request_waiting_too_long_gets_504(gated, serve_pictures):
    service, gate, entered = gated
    with client_of(service, timeout_s=0.3) as c:
        r = c.post("/v1/caption", files=upload(serve_pictures[0]))
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        gate.set()
        assert c.post("/v1/caption", files=upload(serve_pictures[0])).status_code == 200  # the server goes on
