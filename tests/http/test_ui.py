"""The try-it page at ``GET /`` (gre/http/ui.py, gre/http/static/), in a real browser.

Playwright drives Debian's ``chromium`` (scripts/debian-packages.txt; Playwright's own browser
download is not used) against a real ``gre serve`` of the default model, and checks what the
page shows against what the API answers for the same bytes.

``GRE_UI_SCREENSHOT=docs/ui.png pytest tests/http/test_ui.py -k cat`` also saves the
screenshot of the cat's result README shows.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from benchmarks.zoo import zoo_weights
from gre.http.ui import CONTENT_SECURITY_POLICY
from tests.support import Server, running_server, shared

CHROMIUM = Path("/usr/bin/chromium")
ASSETS = {
    "/": "text/html; charset=utf-8",
    "/ui/app.js": "text/javascript; charset=utf-8",
    "/ui/style.css": "text/css; charset=utf-8",
}
#: The page's size in the screenshot (docs/ui.png).
VIEWPORT: ViewportSize = {"width": 1000, "height": 800}
NOT_AN_IMAGE = b"just some text, not an image\n"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the try-it page is tested in Debian's chromium. Install it "
            "with `apt-get install -y --no-install-recommends chromium`, or run `make test`, "
            "which installs scripts/debian-packages.txt"
        )
    # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("ui")) as server:
        yield server


class Console:
    """What a page logged: CSP violations and uncaught errors among it."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        self.messages.append(message.text)

    def csp_violations(self) -> list[str]:
        return [text for text in self.messages if "Content Security Policy" in text]

    def assert_clean(self) -> None:
        """Nothing refused by the CSP, no uncaught error."""
        assert self.csp_violations() == []
        assert self.errors == []


def open_page(browser: Browser, server: Server) -> tuple[Page, Console]:
    """The page, once it shows the model (so top_k is within the class count)."""
    page = browser.new_page(viewport=VIEWPORT)
    console = Console(page)
    page.goto(f"{server.url}/")
    expect(page.locator("#model-name")).not_to_have_text("…")
    return page, console


def classify(page: Page, name: str, data: bytes, state: str = "done") -> None:
    """Choose ``data`` as file ``name`` in the file input and wait for its answer (``state``:
    ``done`` or ``error``)."""
    result = page.locator("#result")
    answers = int(result.get_attribute("data-answers") or "0")
    page.set_input_files("#file", {"name": name, "mimeType": "image/jpeg", "buffer": data})
    expect(result).to_have_attribute("data-answers", str(answers + 1))
    expect(result).to_have_attribute("data-state", state)


def rows(page: Page) -> list[dict[str, Any]]:
    """The shown rows: label text, confidence text and value, bar width (a fraction)."""
    result: list[dict[str, Any]] = page.eval_on_selector_all(
        "#labels li",
        """rows => rows.map(row => ({
            label: row.querySelector('.label').textContent,
            text: row.querySelector('.confidence').textContent,
            value: row.querySelector('.confidence').value,
            bar: row.querySelector('.fill').getBoundingClientRect().width
                / row.querySelector('.bar').getBoundingClientRect().width,
        }))""",
    )
    return result


def assert_rows_are(page: Page, answer: list[dict[str, Any]]) -> None:
    """The rows are the API's ``answer``: the same labels in the same order, each confidence
    as the API's number (its shortest repr, exactly) and as a percentage with 2 decimals."""
    shown = rows(page)
    assert [row["label"] for row in shown] == [entry["label"] for entry in answer]
    for row, entry in zip(shown, answer, strict=True):
        assert float(row["value"]) == entry["confidence"], row
        assert row["text"] == f"{entry['confidence'] * 100:.2f}%", row
        assert row["bar"] == pytest.approx(entry["confidence"], abs=0.01), row


def save_screenshot(png: Path, target: Path) -> None:
    """``png`` as ``target`` in 256 colours: a third of the size, no visible difference."""
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(target, optimize=True)


def api(server: Server, data: bytes, top_k: int | None = None) -> httpx.Response:
    params = {} if top_k is None else {"top_k": top_k}
    with server.client() as client:
        return client.post("/api/classify", content=data, params=params)


def test_page_and_assets_carry_the_csp(server: Server) -> None:
    with server.client() as client:
        for path, media_type in ASSETS.items():
            for method in ("GET", "HEAD"):
                response = client.request(method, path)
                assert response.status_code == 200, (method, path)
                assert response.headers["content-type"] == media_type, path
                assert response.headers["content-security-policy"] == "default-src 'self'"
                assert response.headers["x-content-type-options"] == "nosniff"
        page = client.get("/").text
    assert CONTENT_SECURITY_POLICY == "default-src 'self'"
    # Nothing inline for the CSP to refuse, nothing from elsewhere.
    assert "<style" not in page
    assert " style=" not in page
    assert '<script type="module" src="/ui/app.js"></script>' in page
    assert "http://" not in page
    assert "https://" not in page


def test_cat_result_is_the_apis(
    browser: Browser, server: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    page, console = open_page(browser, server)
    with server.client() as client:
        model = client.get("/api/model").json()
    assert page.locator("#model-name").text_content() == model["name"] == "open_nsfw"
    assert page.locator("#model-engine").text_content() == model["engine"] == "opencv"
    assert page.locator("#model-devices").text_content() == ", ".join(model["devices"])
    batching = page.locator("#model-batching").text_content() or ""
    assert f"max_batch_size {model['batching']['max_batch_size']}" in batching
    # top_k starts at 5, within the class count: open_nsfw has 2.
    assert model["classes"] == 2
    expect(page.locator("#top-k")).to_have_value("2")

    classify(page, "cat.jpg", cat)
    answer = api(server, cat, top_k=2).json()
    assert len(answer) == 2
    assert_rows_are(page, answer)
    # The preview was drawn (no URL loaded: the CSP allows no blob: image).
    drawn = page.eval_on_selector(
        "#preview",
        "c => c.width > 0 && !c.hidden && c.getContext('2d').getImageData(c.width / 2, "
        "c.height / 2, 1, 1).data[3] === 255",
    )
    assert drawn
    assert page.locator("#file-name").text_content() == f"cat.jpg · {len(cat) / 1024:.1f} KiB"
    # Server-Timing: queue, preprocess, inference (ms), then the browser's round trip.
    names = page.locator("#timings dt").all_text_contents()
    assert names == ["queue", "preprocess", "inference", "round trip (browser)"]
    for value in page.locator("#timings dd").all_text_contents():
        assert value.endswith(" ms"), value
        assert float(value.removesuffix(" ms")) >= 0, value
    assert json.loads(page.locator("#raw-body").text_content() or "") == answer
    assert "top_k=2" in (page.locator("#curl").text_content() or "")

    page.screenshot(path=str(tmp_path / "ui.png"))
    if target := os.environ.get("GRE_UI_SCREENSHOT"):
        save_screenshot(tmp_path / "ui.png", Path(request.config.rootpath) / target)

    # Another top_k sends the same image again: Enter in the field submits.
    page.fill("#top-k", "1")
    page.press("#top-k", "Enter")
    expect(page.locator("#result")).to_have_attribute("data-answers", "2")
    expect(page.locator("#result")).to_have_attribute("data-state", "done")
    assert_rows_are(page, api(server, cat, top_k=1).json())
    console.assert_clean()


@pytest.mark.parametrize("gesture", ["drop", "paste"])
def test_dropped_or_pasted_image(browser: Browser, server: Server, gesture: str) -> None:
    """An image dropped on the page, or pasted into it, is classified as a chosen one is."""
    cat = shared("images/cat.jpg").read_bytes()
    page, console = open_page(browser, server)
    page.evaluate(
        """([gesture, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'cat.jpg', {type: 'image/jpeg'}));
            const event = gesture === 'drop'
                ? new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true})
                : new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true});
            document.body.dispatchEvent(event);
        }""",
        [gesture, base64.b64encode(cat).decode()],
    )
    expect(page.locator("#result")).to_have_attribute("data-answers", "1")
    expect(page.locator("#result")).to_have_attribute("data-state", "done")
    assert_rows_are(page, api(server, cat, top_k=2).json())
    assert page.locator("#file-name").text_content() == f"cat.jpg · {len(cat) / 1024:.1f} KiB"
    console.assert_clean()


def test_refusals_show_gres_error_json(browser: Browser, server: Server) -> None:
    page, console = open_page(browser, server)
    classify(page, "notes.txt", NOT_AN_IMAGE, state="error")
    refused = api(server, NOT_AN_IMAGE)
    assert refused.status_code == 400
    assert refused.json()["error"] == "bad_image"
    assert page.locator("#error-code").text_content() == "bad_image"
    assert (page.locator("#error-status").text_content() or "").startswith("HTTP 400")
    assert json.loads(page.locator("#error-body").text_content() or "") == refused.json()
    assert refused.json()["message"] in (page.locator("#status").text_content() or "")
    expect(page.locator("#labels li")).to_have_count(0)
    expect(page.locator("#preview-note")).to_be_visible()

    # A top_k beyond the class count: gre's 422, as it came.
    cat = shared("images/cat.jpg").read_bytes()
    page.fill("#top-k", "3")
    classify(page, "cat.jpg", cat, state="error")
    too_many = api(server, cat, top_k=3)
    assert too_many.status_code == 422
    assert page.locator("#error-code").text_content() == "bad_top_k"
    assert json.loads(page.locator("#error-body").text_content() or "") == too_many.json()
    console.assert_clean()


def test_the_csp_is_enforced(browser: Browser, server: Server) -> None:
    """The browser applies the header: a blob: image (what a preview would usually be) and an
    inline script are refused; hence the canvas preview and no inline anything."""
    page, console = open_page(browser, server)
    outcome = page.evaluate(
        """async () => {
            const canvas = document.createElement('canvas');
            const blob = await new Promise(done => canvas.toBlob(done));
            const image = new Image();
            return await new Promise(done => {
                image.onload = () => done('loaded');
                image.onerror = () => done('refused');
                image.src = URL.createObjectURL(blob);
            });
        }"""
    )
    assert outcome == "refused"
    page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.inlineRan = true';
            document.body.append(script);
        }"""
    )
    assert page.evaluate("() => window.inlineRan === undefined")
    violations = console.csp_violations()
    assert any("img-src" in text or "default-src" in text for text in violations), violations
    assert any("script-src" in text for text in violations), violations


def test_labels_are_shown_as_text(browser: Browser, tmp_path: Path) -> None:
    """A label (and a file name) carrying markup is shown as its text, not parsed."""
    labels = ["<b>sfw</b>", "<img src=x onerror=alert(1)>"]
    setting = f"labels={json.dumps(labels)}"
    cat = shared("images/cat.jpg").read_bytes()
    with running_server(tmp_path, "--set", setting) as server:
        page, console = open_page(browser, server)
        classify(page, "<i>cat</i>.jpg", cat)
        answer = api(server, cat, top_k=2).json()
    assert {entry["label"] for entry in answer} == set(labels)
    assert_rows_are(page, answer)
    assert page.locator("#labels li .label").first.text_content() == "<b>sfw</b>"
    assert (page.locator("#file-name").text_content() or "").startswith("<i>cat</i>.jpg")
    assert page.locator("#result b, #result img, #result i, figcaption i").count() == 0
    console.assert_clean()


def test_ui_off_is_not_found(tmp_path: Path) -> None:
    with running_server(tmp_path, "--set", "ui=false") as server, server.client() as client:
        responses = {path: client.get(path) for path in ASSETS}
    for path, response in responses.items():
        assert response.status_code == 404, path
        assert response.json() == {"error": "not_found", "message": f"no endpoint at {path}"}
        assert "content-security-policy" not in response.headers


def test_five_rows_of_a_thousand_class_net(browser: Browser, tmp_path: Path) -> None:
    """The issue's case: 5 rows, from SqueezeNet 1.1 over the 1000 ILSVRC12 synset words
    (seeded random weights: the labels mean nothing, the rows must still be the API's)."""
    deploy = shared("models/squeezenet_v1.1/deploy.prototxt")
    config = tmp_path / "squeezenet.toml"
    config.write_text(
        f'[model]\nname = "squeezenet_v1.1"\ndeploy = "{deploy}"\n'
        f'weights = "{zoo_weights(deploy, "squeezenet_v1.1")}"\n'
        f'synset_words = "{shared("data/ilsvrc12/synset_words.txt")}"\n'
    )
    cat = shared("images/cat.jpg").read_bytes()
    with running_server(tmp_path, "--config", str(config)) as server:
        page, console = open_page(browser, server)
        expect(page.locator("#top-k")).to_have_value("5")
        classify(page, "cat.jpg", cat)
        answer = api(server, cat, top_k=5).json()
        assert len(answer) == 5
        assert_rows_are(page, answer)
        console.assert_clean()
