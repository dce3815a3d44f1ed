"""The search demo's page in a real browser: headless Chromium (skipped where ``chromium`` is not on PATH), driven
over the DevTools protocol through ``--remote-debugging-pipe`` (standard library only): load the page, pick a
reference from the gallery, run a query, click a result with the mouse, run the next query, save screenshots."""
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from PIL import Image

from tests.test_search_reranking import serve as serve_reranking
from tests.test_search_reranking import tiny as reranking_tiny  # noqa: F401 (the module fixture)
from tests.test_search_server import TOP_K, start, tiny  # noqa: F401 (the module fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH")


class DevTools:
    """A headless Chromium and one page, commanded over the DevTools pipe (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, profile: Path, size=(1280, 900)):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def wire() -> None:
            high = [os.dup(to_browser), os.dup(from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.session = b"", 0, None
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def send(self, method: str, **params) -> dict:
        """Send one command and return its result (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """Poll ``expression`` until it is truthy (a page still loading may raise meanwhile); its value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout}s for {expression}")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first element matching ``selector``."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type_text(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def choose_file(self, selector: str, path: Path) -> None:
        """Put ``path`` into the file input ``selector``, as a user picking it (fires its change event)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._write)
        os.close(self._read)


@pytest.fixture
def browser(tmp_path):
    devtools = DevTools(tmp_path / "profile")
    yield devtools
    devtools.close()


@pytest.fixture
def page_server(tiny):  # noqa: F811 (the imported fixture)
    server = start([*tiny["model_args"], "--cache-dir", str(tiny["cache"]), "--top-k", str(TOP_K)])
    yield server
    server.shutdown()
    server.server_close()


RESULTS = "document.querySelectorAll('#results .result').length"
LOADED = "[...document.images].every((image) => image.complete && image.naturalWidth > 0)"


def test_pick_query_click_and_refine_in_chromium(browser, page_server, tmp_path):
    browser.send("Page.navigate", url=page_server.url)
    browser.wait_for("document.body.dataset.ready === '1' && document.querySelectorAll('#gallery .thumb').length")
    assert browser.evaluate("document.querySelectorAll('#gallery .thumb').length") == 18

    browser.click("#gallery .thumb:nth-child(4)")
    assert browser.evaluate("location.search") == "?ref=3"
    browser.type_text("#caption", "add a red circle")
    browser.click("#search")
    assert browser.wait_for(RESULTS) == TOP_K
    first = browser.evaluate("[...document.querySelectorAll('#results .result')].map((r) => Number(r.dataset.id))")
    expected = [r.id for r in page_server.engine.search(3, "add a red circle", TOP_K)]
    assert first == expected
    browser.wait_for(LOADED)
    browser.screenshot(tmp_path / "search_query.png")

    browser.click("#results .result:nth-child(2)")
    clicked = first[1]
    assert browser.evaluate("location.search") == f"?ref={clicked}"
    assert page_server.engine.model.images[clicked].name in browser.evaluate(
        "document.getElementById('reference-name').textContent")
    assert browser.evaluate(RESULTS) == 0 and browser.evaluate("document.getElementById('caption').value") == ""
    browser.type_text("#caption", "remove the blue square")
    browser.click("#search")
    assert browser.wait_for(RESULTS) == TOP_K
    second = browser.evaluate("[...document.querySelectorAll('#results .result')].map((r) => Number(r.dataset.id))")
    assert second == [r.id for r in page_server.engine.search(clicked, "remove the blue square", TOP_K)]
    assert browser.evaluate("location.search") == f"?ref={clicked}&q=remove+the+blue+square"
    browser.wait_for(LOADED)
    shot = browser.screenshot(tmp_path / "search_refined.png")
    assert shot.stat().st_size > 10_000
    assert browser.evaluate("document.getElementById('message').textContent") == ""


def test_address_state_runs_the_search_and_errors_show_on_the_page(browser, page_server, tmp_path):
    browser.send("Page.navigate", url=f"{page_server.url}?ref=5&q=add+a+red+circle")
    assert browser.wait_for(RESULTS) == TOP_K
    name = page_server.engine.model.images[5].name
    assert browser.evaluate("document.getElementById('reference-name').textContent") == f"{name} (cirr)"
    browser.send("Page.navigate", url=f"{page_server.url}?ref=999&q=add+a+red+circle")
    browser.wait_for("document.getElementById('message').textContent.includes('unknown gallery id 999')")
    assert browser.evaluate(RESULTS) == 0
    browser.screenshot(tmp_path / "search_error.png")


def test_upload_a_reference_then_a_file_that_is_not_an_image(browser, page_server, tmp_path):
    picture = tmp_path / "my photo.png"
    Image.new("RGB", (40, 30), (220, 40, 40)).save(picture)
    browser.send("Page.navigate", url=page_server.url)
    browser.wait_for("document.body.dataset.ready === '1'")
    browser.choose_file("#upload", picture)
    browser.wait_for("document.getElementById('reference-name')?.textContent === 'my photo.png (uploaded)'")
    token = browser.evaluate("new URLSearchParams(location.search).get('ref')")
    assert token in page_server.engine.uploads
    browser.type_text("#caption", "add a red circle")
    browser.click("#search")
    assert browser.wait_for(RESULTS) == TOP_K
    browser.wait_for(LOADED)
    browser.screenshot(tmp_path / "search_upload.png")

    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    browser.choose_file("#upload", fake)
    browser.wait_for("document.getElementById('message').textContent.includes('not a readable JPEG or PNG')")
    assert browser.evaluate("new URLSearchParams(location.search).get('ref')") == token


def test_stage_toggle_of_reranking(browser, reranking_tiny, tmp_path):  # noqa: F811 (the imported fixture)
    server = serve_reranking([*reranking_tiny["flags"], "--stage2-path", str(reranking_tiny["stage2"]), "--k", "8",
                              "--top-k", str(TOP_K), "--cache-dir", str(reranking_tiny["root"] / "cache")])
    try:
        caption = "add a red circle"
        stage1, stage2 = ([r.id for r in server.engine.search(3, caption, TOP_K, stage)]
                          for stage in server.engine.model.stages)
        assert stage1 != stage2
        browser.send("Page.navigate", url=f"{server.url}?ref=3&q=add+a+red+circle")
        browser.wait_for(f"document.querySelectorAll('#results .result').length === {TOP_K}")
        shown = "[...document.querySelectorAll('#results .result')].map((r) => Number(r.dataset.id))"
        assert browser.evaluate(shown) == stage1
        browser.click("#stage-stage2")
        browser.wait_for(f"JSON.stringify({shown}) === {json.dumps(json.dumps(stage2, separators=(',', ':')))}")
        assert browser.evaluate("location.search") == "?ref=3&q=add+a+red+circle&stage=stage2"
        browser.wait_for(LOADED)
        browser.screenshot(tmp_path / "search_stage2.png")
    finally:
        server.shutdown()
        server.server_close()
