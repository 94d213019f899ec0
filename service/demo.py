"""The demo page at `/`: drop a photo, compare the input enlarged with bicubic against the model's result.

Everything the page loads comes from this service (static files under /static/demo, no CDN, no build
step), and its Content-Security-Policy makes the browser refuse anything else. The page asks
/demo/config whether to show an API-key field: it learns whether keys are set, never the keys.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from service.api import State

STATIC = Path(__file__).parent / "static" / "demo"
# blob: for the result, the bicubic image and the download link; worker-src for the bicubic worker.
CSP = (
    "default-src 'self'; img-src 'self' blob:; worker-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


class DemoConfig(BaseModel):
    api_key_required: bool
    max_upload_bytes: int
    max_input_pixels: int


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP})


@router.get("/demo/config")
async def config(state: State) -> DemoConfig:
    settings = state.settings
    return DemoConfig(
        api_key_required=bool(state.key_digests),
        max_upload_bytes=settings.max_upload_bytes,
        max_input_pixels=settings.max_input_pixels,
    )
