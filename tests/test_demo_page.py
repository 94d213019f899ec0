"""The demo page as the service serves it: local assets only, a strict CSP, and the key flag without keys."""

import asyncio
import re

import httpx
import pytest

from service import demo
from service.app import create_app
from service.settings import Settings

PAGE_FILES = ("index.html", "demo.js", "bicubic.js", "demo.css")


def get(*paths: str) -> list[httpx.Response]:
    """GET each path from a fresh app, without its lifespan: the page and its config need no model."""
    app = create_app(Settings(model_path="unused.onnx"))

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rsd") as http:
            return [await http.get(path) for path in paths]

    return asyncio.run(main())


def test_page_and_every_asset_it_names_are_served_locally():
    [page] = get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/static/demo/demo.js", "/static/demo/demo.css", "/static/demo/favicon.svg"} <= set(assets)
    assert all(asset.startswith("/") for asset in assets), assets
    for asset, answer in zip(assets, get(*assets), strict=True):
        assert answer.status_code == 200, asset
    [worker] = get("/static/demo/bicubic.js")
    assert worker.status_code == 200 and "javascript" in worker.headers["content-type"]


def test_the_page_names_no_other_host():
    for name in PAGE_FILES:
        text = (demo.STATIC / name).read_text()
        assert not re.search(r"://|[\"'(]//", text), f"{name} names another host"


@pytest.mark.parametrize("keys", ["", "s3cret-key-1,other-key-2"])
def test_config_says_whether_keys_are_needed_and_never_shows_them(keys, monkeypatch):
    monkeypatch.setenv("RSD_API_KEYS", keys)
    [answer] = get("/demo/config")  # public: the page needs it before any key is typed
    assert answer.status_code == 200
    assert answer.json()["api_key_required"] is bool(keys)
    assert answer.json()["max_input_pixels"] == Settings().max_input_pixels
    for key in filter(None, keys.split(",")):
        assert key not in answer.text
