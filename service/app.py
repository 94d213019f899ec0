"""The FastAPI app: `create_app(settings)` wires routes, errors, metrics, docs and the model lifespan."""

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import swagger_ui
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import rsd
from service import demo, logs
from service.api import router
from service.backends import Backend, load_backend
from service.batcher import Batcher
from service.errors import ServiceError
from service.imageio import set_pixel_limit
from service.metrics import Metrics
from service.settings import Settings
from service.state import ServiceState
from service.tiling import TileBatch, check_overlap

log = logging.getLogger("service")

SWAGGER_STATIC = Path(swagger_ui.__file__).parent / "static"  # Swagger UI 5 (Apache-2.0), no CDN
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """The app; the model is loaded (unless `backend` is given) and warmed up in the lifespan."""
    settings = settings or Settings()
    state = ServiceState.create(settings, backend)
    set_pixel_limit(settings.max_input_pixels)

    app = FastAPI(
        title="rsd x4 super-resolution",
        version=rsd.__version__,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    app.include_router(router)
    app.include_router(demo.router)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(RequestContext, metrics=state.metrics)
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_STATIC), name="swagger")
    app.mount("/static/demo", StaticFiles(directory=demo.STATIC), name="demo")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    settings = state.settings
    loop = asyncio.get_running_loop()
    if state.backend is None:
        state.backend = await loop.run_in_executor(None, load_backend, settings)
    info = state.backend.info
    check_overlap(info.tile_sizes, settings.tile_overlap)
    state.metrics.set_model(info)
    state.batcher = Batcher(
        state.backend.run,
        tile_size=info.tile_size,
        batch_limits=info.batch_limits(settings.max_batch_tiles),
        max_wait_ms=settings.max_wait_ms,
        max_queue_tiles=settings.max_queue_tiles,
        metrics=state.metrics,
    )
    state.batcher.start()
    await _warm_up(state.batcher, info.tile_sizes)
    state.ready = True
    fields = {"model": info.name, "backend": info.backend, "tile": info.tile_size, "tiles": info.tile_sizes}
    log.info("ready", extra={"fields": fields})
    try:
        yield
    finally:
        state.ready, state.draining = False, True
        await state.batcher.close(settings.shutdown_timeout_s)
        state.backend.close()
        state.cpu_pool.shutdown(wait=False)


async def _warm_up(batcher: Batcher, sizes: tuple[int, ...]) -> None:
    """One full batch of each tile size through the real path, so no request pays a graph's first-run
    setup: the largest batches allocate the backend's buffers (every size's full batch holds about the
    same pixels, and ONNX Runtime's sessions share one arena)."""
    for tile in sizes:
        batch = batcher.batch_limits[tile]
        noise = np.zeros((batch, 3, tile, tile), np.float32)
        tiles = TileBatch(np.full((batch, 3, tile, tile), 0.5, np.float32), noise, noise[:, :1])
        admission = batcher.admit(batch * (tile / batcher.tile_size) ** 2)  # in tiles of the unit size
        job = batcher.submit(admission, {tile: tiles}, time.perf_counter() + 600)
        await job.future


class RequestContext:
    """Request id (kept from X-Request-ID when sane), start time, access log, request metrics, and a
    JSON 500 for anything unexpected: user input never produces a bare traceback response."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(request_id)
        started = time.perf_counter()
        scope.setdefault("state", {}).update(request_id=request_id, started=started)
        status = 0
        upscale = scope["path"] == "/v1/upscale"
        if upscale:
            self.metrics.inflight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error")
            if not status:
                response = error_response(500, "internal_error", f"internal error (request id {request_id})")
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            if upscale:
                self.metrics.inflight.dec()
                if status == 200:
                    self.metrics.request_seconds.observe(elapsed)
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round(1000 * elapsed, 1),
            }
            log.info("request", extra={"fields": fields})
            logs.request_id.reset(token)


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    request.app.state.service.metrics.rejections.labels(exc.type).inc()
    return error_response(exc.status, exc.type, exc.message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()
    )
    request.app.state.service.metrics.rejections.labels("bad_request").inc()
    return error_response(400, "bad_request", problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail), exc.headers
    )
