"""A real ``vislang serve`` process on 127.0.0.1: started, waited for, talked to over HTTP, stopped."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serve_helpers import live_server

httpx = pytest.importorskip("httpx")


def test_a_live_server_answers_every_task_over_http(serve_runs, serve_index, serve_pictures):
    args = [str(serve_runs["caption"]), str(serve_runs["vqa"]), str(serve_runs["classify"]), "--index",
            str(serve_index), "--max-batch", "8"]
    with live_server(args) as url, httpx.Client(base_url=url, timeout=30) as http:
        models = http.get("/v1/models").json()
        assert sorted(m["task"] for m in models["models"]) == ["caption", "classify", "retrieval", "vqa"]
        image = {"image": ("red.png", serve_pictures[0].read_bytes(), "image/png")}
        cap = http.post("/v1/caption", files=image)
        assert cap.status_code == 200 and cap.json()["caption"]
        ask = http.post("/v1/ask", files=image, data={"question": "what color is the circle?"})
        assert ask.status_code == 200 and ask.json()["answer"]
        assert http.post("/v1/classify", files=image).status_code == 200
        with ThreadPoolExecutor(8) as pool:  # concurrent searches over real sockets
            results = list(pool.map(lambda q: http.post("/v1/search", data={"text": q, "k": "3"}),
                                    ["red circle", "green square", "blue triangle", "yellow diamond"] * 4))
        assert all(r.status_code == 200 and len(r.json()["hits"]) == 3 for r in results)
        thumb = http.get(results[0].json()["hits"][0]["thumbnail"])
        assert thumb.status_code == 200 and thumb.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert http.post("/v1/caption", files={"image": ("x.png", b"nope", "image/png")}).status_code == 422
        metrics = http.get("/metrics").text
        assert 'vislang_requests_total{endpoint="/v1/search",status="200"} 16.0' in metrics
        port = url.rsplit(":", 1)[1]
    log = (Path(os.environ.get("TMPDIR", "/tmp")) / f"vislang-serve-{port}.log").read_text()
    assert "POST /v1/search 200" in log and "POST /v1/caption 422" in log  # one access line per request
    assert "Traceback" not in log


def test_a_broken_run_stops_the_start_with_one_line(serve_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    for args in ([str(tmp_path / "missing")], [str(tmp_path / "empty")], [str(serve_runs["caption"]), "--port", "0"],
                 [str(serve_runs["caption"]), "--index", str(tmp_path / "empty")]):
        r = subprocess.run([sys.executable, "-m", "vislang", "serve", *args], capture_output=True, text=True,
                           timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)


@pytest.mark.parametrize("args, words", [
    (["--max-batch", "0"], "max_batch"), (["--queue-size", "0"], "queue_size"), (["--timeout-s", "0"], "timeout_s"),
    (["--max-body-mb", "0"], "max_body_bytes"), (["--port", "70000"], "--port"), (["--token", " "], "token is empty"),
])
def test_bad_options_are_one_line_errors_before_loading(args, words, serve_runs, capsys):
    from vislang.cli import main

    assert main(["serve", str(serve_runs["caption"]), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]


def test_no_models_and_no_index_is_an_error(capsys):
    from vislang.cli import main

    assert main(["serve"]) == 2
    assert "at least one run" in capsys.readouterr().err


def test_a_live_server_generates_the_predictors_images(generate_run, threads):
    import io

    import numpy as np
    from PIL import Image

    import vislang

    with live_server([str(generate_run)]) as url, httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/v1/generate", json={"prompt": "a red circle", "n": 2, "steps": 4, "seed": 1})
        bad = http.post("/v1/generate", json={"prompt": 12})
    assert r.status_code == 200, r.text
    assert bad.status_code == 422 and bad.json()["error"]["message"] == "prompt must be text, got int"
    with threads(1):  # the server runs on one thread too (OMP_NUM_THREADS=1)
        want = vislang.load(generate_run).generate(["a red circle"], n=2, steps=4, seed=1, warn=False)
    got = [Image.open(io.BytesIO(base64.b64decode(im["png"].partition(",")[2]))) for im in r.json()["images"]]
    assert [im["seed"] for im in r.json()["images"]] == [g.seed for g in want] == [1, 2]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w.image))
