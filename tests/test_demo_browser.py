"""The demo page in a real browser: Debian's chromium, headless, driven by Playwright, against a real
`python -m rsd.cli serve` process with API keys on.

The server runs the default model when models/default/rsd-tiny-x4.json exists, else the fixture graph
(tests/onnx_fixture.py); the test prints which. Any request that would leave the machine is blocked and
fails the test, and so does any script error or Content-Security-Policy complaint in the console.
Screenshots go to $RSD_SCREENSHOT_DIR when set (docs/ to refresh the README's), else to a temp folder.
"""

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from skimage import data as skimage_data

from tests.onnx_fixture import build_fixture_model
from tests.test_service_server import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default" / "rsd-tiny-x4.json"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "demo-browser-test-key"
SEED = 7


def chromium() -> Path:
    """The system chromium, installed by scripts/install_chromium.sh when missing; no skip: a failure."""
    if not CHROMIUM.exists():
        setup = subprocess.run(
            ["bash", str(REPO / "scripts" / "install_chromium.sh")], capture_output=True, text=True
        )
        if setup.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(
                f"the browser test needs {CHROMIUM} (Debian's chromium) and scripts/install_chromium.sh "
                f"could not install it:\n{setup.stdout}{setup.stderr}",
                pytrace=False,
            )
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A real server process on the default model (or the fixture graph) with one API key."""
    work = tmp_path_factory.mktemp("demo-server")
    if DEFAULT_MODEL.is_file():
        model = DEFAULT_MODEL
        print(f"demo browser test: default model {model}")
    else:
        model = build_fixture_model(work / "fixture.onnx", tile=64)
        print(f"demo browser test: {DEFAULT_MODEL} not found, fixture graph {model}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "RSD_MODEL_PATH": str(model),
        "RSD_API_KEYS": API_KEY,
        "RSD_MAX_BATCH_TILES": "2",  # the warm-up runs one full batch: keep it cheap on a real model
        "RSD_LOG_LEVEL": "warning",
    }
    log = work / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "rsd.cli", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the server was not ready in 60 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A real photo (Chelsea the cat, CC0, shipped with scikit-image) reduced 3x to 151x100, as x4 input."""
    path = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).reduce(3).save(path)
    return path


def guard_network(context: BrowserContext, origin: str) -> list[str]:
    """Let only requests to the server through; the returned list collects every other one."""
    outside: list[str] = []
    host = urlsplit(origin).netloc

    def check(url: str) -> bool:
        parts = urlsplit(url)
        local = parts.scheme in ("blob", "data") or (parts.scheme == "http" and parts.netloc == host)
        if not local:
            outside.append(url)
        return local

    context.route("**/*", lambda route: route.continue_() if check(route.request.url) else route.abort())
    context.on("request", lambda request: check(request.url))
    return outside


def watch_console(page: Page) -> list[str]:
    """Script errors and console errors, except the browser's note on each 4xx the test provokes."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and not message.text.startswith(
                "Failed to load resource: the server responded with a status of 4"
            )
            and problems.append(f"console: {message.text}")
        ),
    )
    return problems


def pixels(page: Page, selector: str) -> np.ndarray:
    """The decoded pixels of an <img> on the page, (H, W, 4) uint8, read back through a canvas."""
    encoded = page.evaluate(
        """(selector) => {
            const img = document.querySelector(selector);
            const canvas = new OffscreenCanvas(img.naturalWidth, img.naturalHeight);
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const bytes = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) {
                text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            }
            return [canvas.width, canvas.height, btoa(text)];
        }""",
        selector,
    )
    width, height, text = encoded
    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(height, width, 4)


def drop(page: Page, image: Path) -> None:
    """Drop `image` on the page's drop zone, as a file dragged from the desktop arrives."""
    files = page.evaluate_handle(
        """([name, base64]) => {
            const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
            const files = new DataTransfer();
            files.items.add(new File([bytes], name, { type: "image/png" }));
            return files;
        }""",
        [image.name, base64.b64encode(image.read_bytes()).decode()],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": files})


def test_demo_page_upscales_compares_and_reports_errors(server, photo, tmp_path):
    screenshots = Path(os.environ.get("RSD_SCREENSHOT_DIR", tmp_path))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    lr = np.asarray(Image.open(photo).convert("RGB"))  # (100, 151, 3)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            outside = guard_network(context, server)
            page = context.new_page()
            problems = watch_console(page)
            page.goto(f"{server}/")

            # Keys are on: the page offers the field. The file picker is reached by keyboard.
            expect(page.locator("#key")).to_be_visible()
            page.keyboard.press("Tab")  # the "API docs" link
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "file"
            label = page.locator("label[for=file]")
            assert label.evaluate("label => getComputedStyle(label).outlineStyle") == "solid"  # focus ring
            page.fill("#key", API_KEY)

            # A text file: the API's own message is on the page, word for word.
            page.set_input_files("#file", str(notes))
            with page.expect_response(lambda r: "/v1/upscale" in r.url) as answer:
                page.click("#submit")
            error = answer.value.json()["error"]
            assert answer.value.status == 422
            expect(page.locator("#error-message")).to_have_text(error["message"])
            expect(page.locator("#error-title")).to_contain_text(f"422 ({error['type']})")

            # The photo, seed fixed: a 4x result and a bicubic image of the same size.
            page.fill("#seed", str(SEED))
            drop(page, photo)
            expect(page.locator("#picked")).to_contain_text("chelsea.png")
            with page.expect_response(lambda r: "/v1/upscale" in r.url, timeout=90_000) as answer:
                page.click("#submit")
            expect(page.locator("#result")).to_be_visible()
            expect(page.locator("#error")).to_be_hidden()
            response = answer.value
            assert response.status == 200 and response.headers["x-seed"] == str(SEED)
            assert "format=png" in response.url and "outscale=4" in response.url
            before, after = pixels(page, "#before"), pixels(page, "#after")
            assert after.shape == (4 * lr.shape[0], 4 * lr.shape[1], 4)
            assert before.shape == after.shape
            # The page shows exactly what the API sent, and its "bicubic" is Pillow's bicubic, pixel for
            # pixel (fixed-point rounding aside): the two are aligned.
            served = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
            np.testing.assert_array_equal(after[..., :3], served)
            pillow = np.asarray(Image.open(photo).resize((after.shape[1], after.shape[0]), Image.BICUBIC))
            assert np.abs(before[..., :3].astype(int) - pillow).max() <= 1
            expect(page.locator("#download")).to_have_attribute("download", "chelsea_x4.png")
            expect(page.locator("#timing")).to_contain_text(f"{after.shape[1]}×{after.shape[0]}")

            # The slider: a click on the image itself, then the keyboard.
            figure = page.locator("#figure")
            box = figure.bounding_box()
            page.mouse.click(box["x"] + 0.7 * box["width"], box["y"] + box["height"] / 2)
            assert abs(float(page.input_value("#slider")) - 70) < 1
            page.focus("#slider")
            page.keyboard.press("Home")
            for _ in range(45):
                page.keyboard.press("ArrowRight")
            assert page.input_value("#slider") == "45"
            assert figure.evaluate("f => f.style.getPropertyValue('--pos')") == "45%"
            page.screenshot(path=screenshots / "demo.png", full_page=True)

            # Phone width: everything fits, nothing scrolls sideways; at 1:1 only the image box scrolls.
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            assert figure.bounding_box()["width"] <= 390
            page.check("#actual")
            assert figure.bounding_box()["width"] == after.shape[1]  # device pixel ratio 1
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.uncheck("#actual")
            page.screenshot(path=screenshots / "demo-phone.png", full_page=True)
        finally:
            browser.close()

    assert not outside, f"requests that would have left the machine: {outside}"
    assert not problems, problems
