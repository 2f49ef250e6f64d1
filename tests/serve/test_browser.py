"""The web page of ``vislang serve`` in a real Chromium (Playwright) against a real server, started as a
subprocess on tiny trained runs: search, caption, ask, errors, a token, and a phone-width window.

Skipped without Playwright or ``/usr/bin/chromium`` (``.ci/run`` installs Debian's chromium). Screenshots go
to ``$VISLANG_TEST_ARTIFACTS`` (default: the test's tmp_path); their paths are printed.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_helpers import live_server

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    if os.environ.get("VISLANG_REQUIRE_BROWSER"):  # CI: setup.sh --dev installs it, so its absence is a failure
        raise RuntimeError(f"{CHROMIUM} is missing although $VISLANG_REQUIRE_BROWSER is set")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

expect = sync_api.expect
expect.set_options(timeout=30_000)  # the first requests load and warm the models on a busy 2-core machine

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
READY_TIMEOUT_S = 60
QUERY = "a red circle"


def call(base: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """GET (or with ``body``, POST as JSON) ``base + path``: ``(status, JSON answer)``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def server(serve_runs, serve_index) -> str:
    """A real ``vislang serve`` of the four tiny runs and the image index on a free port: its base URL."""
    runs = [str(serve_runs[t]) for t in ("caption", "retrieval", "vqa", "classify")]
    with live_server([*runs, "--index", str(serve_index)], timeout=READY_TIMEOUT_S) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


class Tab:
    """A page with what it did: uncaught script errors and the URLs it requested."""

    def __init__(self, page):
        self.page, self.errors, self.urls = page, [], []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.urls.append(r.url))
        page.set_default_timeout(30_000)

    def check_clean(self, base: str) -> None:
        """No script errors, and nothing requested but this server, blob: and data: URLs."""
        assert self.errors == []
        assert [u for u in self.urls if not u.startswith((base + "/", "blob:", "data:"))] == []


@pytest.fixture
def tab(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Tab(context.new_page())
    context.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("VISLANG_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def picture(tmp_path, draw_pictures) -> Path:
    """A red circle to upload (a new file, not one of the index's)."""
    return draw_pictures(tmp_path / "upload", ["red"], size=(64, 64))[0]


def screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def search(page, text: str) -> None:
    page.fill("#search-text", text)
    page.press("#search-text", "Enter")
    expect(page.locator("#search-query")).to_contain_text(text)
    thumbs_loaded(page)


def thumbs_loaded(page) -> None:
    page.wait_for_function("""() => {
        const imgs = [...document.querySelectorAll('#results img.thumb')];
        return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }""")


def test_search_caption_and_ask(tab, server, picture, artifacts):
    page = tab.page
    page.goto(server + "/")
    for panel in ("#search-panel", "#caption-form", "#ask-form", "#classify-form"):
        expect(page.locator(panel)).to_be_visible()
    expect(page.locator("#caption-model")).to_be_hidden()  # one model per task: no choice to make

    # a text query (Enter submits): one card per hit of the API's answer, in its order, with thumbnails
    search(page, QUERY)
    status, want = call(server, "/v1/search", {"text": QUERY, "k": 12})
    assert status == 200
    ids = [h["id"] for h in want["hits"]]
    assert len(ids) == call(server, "/v1/models")[1]["index"]["size"] == 6
    expect(page.locator("#results .card .id")).to_have_text(ids)
    expect(page.locator("#results .card .score").first).to_contain_text(f"{want['hits'][0]['score']:.3f}")

    # clicking a result searches by that image
    page.locator("#results .card button.hit").nth(1).click()
    expect(page.locator("#search-query")).to_contain_text("for the image")
    thumbs_loaded(page)
    expect(page.locator("#results .card")).to_have_count(len(ids))

    # an uploaded image: caption it, ask about it
    page.set_input_files("#image-input", str(picture))
    expect(page.locator("#preview")).to_be_visible()
    page.click("#caption-button")
    expect(page.locator("#caption-text")).not_to_be_empty()
    page.fill("#question", "what color is the circle?")
    page.press("#question", "Enter")
    expect(page.locator("#answer")).not_to_be_empty()
    assert page.locator("#answer-top li").count() >= 1
    page.fill("#classify-text", "a red circle")
    page.click("#classify-button")
    expect(page.locator("#label")).not_to_be_empty()

    # explain: the caption's attention strip
    page.check("#explain")
    page.click("#caption-button")
    strip = page.locator("#caption-explanation")
    expect(strip).to_be_visible()
    page.wait_for_function("() => document.getElementById('caption-explanation').naturalWidth > 0")
    expect(page.locator("#status")).not_to_have_class("error")

    screenshot(page, artifacts / "browser-desktop.png")
    tab.check_clean(server)


def test_phone_width_does_not_overflow(tab, server, picture, artifacts):
    page = tab.page
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(server + "/")
    search(page, QUERY)
    page.set_input_files("#image-input", str(picture))
    page.click("#caption-button")
    expect(page.locator("#caption-text")).not_to_be_empty()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, artifacts / "browser-phone.png")
    tab.check_clean(server)


def test_errors_show_the_servers_message(tab, server, picture):
    page = tab.page
    page.goto(server + "/")
    status = page.locator("#status")
    expect(page.locator("#ask-form")).to_be_visible()
    page.click("#caption-button")  # no image yet: said by the page
    expect(status).to_have_text("Pick or drop an image first.")
    expect(status).to_have_class("error")
    # a question with no words: the error message of the server's JSON error body
    code, body = call(server, "/v1/ask", {"image_base64": base64.b64encode(picture.read_bytes()).decode(),
                                          "question": "?!"})
    assert code == 422 and body["error"]["code"] == "invalid_field"
    page.set_input_files("#image-input", str(picture))
    page.fill("#question", "?!")
    page.click("#ask-button")
    expect(status).to_have_text(body["error"]["message"])
    expect(status).to_have_class("error")
    expect(page.locator("#answer")).to_be_empty()
    tab.check_clean(server)


@pytest.fixture(scope="module")
def token_server(serve_runs, serve_index) -> str:
    """A second real server, with the token ``s3cret`` (from ``$VISLANG_SERVE_TOKEN``) and two captioners (one run
    loaded twice: ``cap``, ``cap-2``) beside the retrieval run and its index, and no VQA or classifier: its base
    URL."""
    caption = str(serve_runs["caption"])
    with live_server([caption, caption, "--index", str(serve_index)], timeout=READY_TIMEOUT_S,
                     env={"VISLANG_SERVE_TOKEN": "s3cret"}) as base:
        yield base


def test_a_token_is_asked_for_and_sent(tab, token_server):
    """On a real 401 the page asks for a token and then sends it with every request, thumbnails included."""
    page = tab.page
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    page.goto(token_server + "/")
    expect(page.locator("#status")).to_contain_text("bearer token")
    expect(page.locator("#search-panel")).to_be_hidden()
    page.fill("#token", "s3cret")
    page.press("#token", "Enter")
    expect(page.locator("#auth")).to_be_hidden()
    search(page, QUERY)
    srcs = page.eval_on_selector_all("#results img.thumb", "imgs => imgs.map((i) => i.src)")
    assert srcs and all(s.startswith("blob:") for s in srcs)
    assert any("/v1/images/" in url and auth == "Bearer s3cret" for url, auth in sent)
    assert page.evaluate("sessionStorage.getItem('vislang-token')") == "s3cret"
    tab.check_clean(token_server)


def test_panels_follow_the_loaded_models(tab, token_server, picture):
    """Tasks with no model are hidden; several models of a task give a choice, sent as ``model``."""
    page = tab.page
    page.goto(token_server + "/")
    page.evaluate("sessionStorage.setItem('vislang-token', 's3cret')")
    page.reload()
    expect(page.locator("#caption-form")).to_be_visible()
    for hidden in ("#ask-form", "#classify-form", "#auth"):
        expect(page.locator(hidden)).to_be_hidden()
    select = page.locator("#caption-model")
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_count(2)
    page.set_input_files("#image-input", str(picture))
    select.select_option("cap-2")
    with page.expect_response(lambda r: r.url.endswith("/v1/caption")) as answer:
        page.click("#caption-button")
    assert answer.value.status == 200 and answer.value.json()["model"] == "cap-2"  # the chosen model answered
    expect(page.locator("#caption-text")).not_to_be_empty()
    tab.check_clean(token_server)


@pytest.fixture(scope="module")
def generate_server(generate_run) -> str:
    """A real ``vislang serve`` of the tiny generator alone: its base URL."""
    with live_server([str(generate_run)], timeout=READY_TIMEOUT_S) as base:
        yield base


def test_generate_tab_at_phone_width(tab, server, generate_server, artifacts):
    """The generate panel shows only beside a generator; a prompt gives the API's images in a grid, its
    warning, its explanation, and a blank prompt the server's message; nothing overflows 375 px."""
    page = tab.page
    page.goto(server + "/")  # no generator loaded: no generate panel
    expect(page.locator("#search-panel")).to_be_visible()
    expect(page.locator("#generate-panel")).to_be_hidden()
    tab.check_clean(server)
    tab.urls.clear()

    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(generate_server + "/")
    expect(page.locator("#generate-panel")).to_be_visible()
    for hidden in ("#search-panel", "#image-panel", "#generate-model"):
        expect(page.locator(hidden)).to_be_hidden()
    page.fill("#prompt", "a red circle")
    page.fill("#generate-n", "3")
    page.fill("#steps", "4")
    page.fill("#seed", "2")
    with page.expect_response(lambda r: r.url.endswith("/v1/generate")) as answer:
        page.press("#prompt", "Enter")
    assert answer.value.status == 200
    expect(page.locator("#generated img")).to_have_count(3)
    page.wait_for_function("""() => [...document.querySelectorAll('#generated img')]
        .every((i) => i.complete && i.naturalWidth === 16)""")
    status, want = call(generate_server, "/v1/generate", {"prompt": "a red circle", "n": 3, "steps": 4, "seed": 2})
    assert status == 200
    srcs = page.eval_on_selector_all("#generated img", "imgs => imgs.map((i) => i.src)")
    assert srcs == [im["png"] for im in want["images"]]  # the page's request is the API's, PNG for PNG
    expect(page.locator("#generated .score")).to_have_text(["seed 2", "seed 3", "seed 4"])
    expect(page.locator("#generate-warnings")).to_be_hidden()
    expect(page.locator("#status")).not_to_have_class("error")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, artifacts / "browser-generate-phone.png")

    # an over-long prompt with explain: the server's warning and the per-token attention strip
    long_prompt = " ".join(["a small red circle"] * 10)
    status, want = call(generate_server, "/v1/generate", {"prompt": long_prompt, "n": 1, "steps": 4})
    assert status == 200 and len(want["warnings"]) == 1
    page.check("#explain")
    page.fill("#prompt", long_prompt)
    page.fill("#generate-n", "1")
    page.click("#generate-button")
    expect(page.locator("#generate-warnings")).to_have_text(want["warnings"][0])
    page.wait_for_function("() => document.getElementById('generate-explanation').naturalWidth > 0")
    expect(page.locator("#generated img")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, artifacts / "browser-generate-explain-phone.png")

    # a blank prompt: the message of the server's JSON error body, and no images
    code, body = call(generate_server, "/v1/generate", {"prompt": "   "})
    assert code == 422
    page.fill("#prompt", "   ")
    page.click("#generate-button")
    expect(page.locator("#status")).to_have_text(body["error"]["message"])
    expect(page.locator("#status")).to_have_class("error")
    expect(page.locator("#generated img")).to_have_count(0)
    expect(page.locator("#generate-explanation")).to_be_hidden()
    tab.check_clean(generate_server)
