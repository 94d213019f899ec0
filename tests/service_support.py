"""Shared helpers of the service tests: a running app with an httpx client, and image bytes."""

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

from service.app import create_app
from service.settings import Settings


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app with its lifespan (model load + warm-up) and an in-process httpx client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rsd", timeout=60) as client:
            yield app, client


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    image = rgb.convert(mode)
    if "A" in mode:  # a real alpha channel, not the all-opaque one convert() gives
        image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
    return image


def metric(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.service.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value
