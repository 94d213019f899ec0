"""HTTP routes; thin, the work is in service.upscale and the modules it calls."""

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.errors import Draining, NotReady, Unauthorized
from service.imageio import INPUT_MEDIA_TYPES, MEDIA_TYPE, OutputFormat
from service.state import ServiceState
from service.upscale import MAX_SEED, UpscaleOptions, upscale

router = APIRouter()


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def require_api_key(request: Request, state: State) -> None:
    """Bearer auth when RSD_API_KEYS is set; every key is compared, in constant time."""
    if not state.key_digests:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    digest = hashlib.sha256(token.strip().encode()).digest()
    matched = False
    for key in state.key_digests:
        matched |= hmac.compare_digest(digest, key)
    if not matched:
        raise Unauthorized("invalid API key")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    status: str


class ModelCard(BaseModel):
    name: str
    version: str
    scale: int
    tile_size: int  # the unit of max_batch_tiles and the tile metrics
    tile_sizes: list[int]  # every size the model has a graph for; each image is laid out in them
    tile_overlap: int
    max_batch_tiles: int
    backend: str
    precision: str
    config_hash: str | None
    schedule: Any
    training: Any


class ModelList(BaseModel):
    models: list[ModelCard]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Malformed request",
        401: "Missing or wrong API key",
        413: "Body or pixel count over the limits",
        415: "Unsupported media type",
        422: "Corrupt or undecodable image",
        429: "Queue full; retry after `Retry-After` seconds",
        503: "Not ready or draining",
        504: "Request deadline passed",
    }.items()
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}},
            }
        },
        **{media: _BINARY for media in sorted(INPUT_MEDIA_TYPES)},
    },
}


@router.post(
    "/v1/upscale",
    dependencies=[Depends(require_api_key)],
    response_class=Response,
    responses={200: {"content": {media: _BINARY for media in MEDIA_TYPE.values()}}, **_ERRORS},
    openapi_extra={"requestBody": _UPLOAD_BODY},
    tags=["upscale"],
)
async def upscale_image(
    request: Request,
    state: State,
    fmt: Annotated[OutputFormat, Query(alias="format", description="Output format.")] = "png",
    quality: Annotated[int | None, Query(ge=1, le=100, description="JPEG/WebP quality (default 90).")] = None,
    seed: Annotated[
        int | None, Query(ge=0, le=MAX_SEED, description="Same seed + image: same bytes.")
    ] = None,
    outscale: Annotated[
        float, Query(ge=1, le=4, description="Final scale, resized from the x4 result.")
    ] = 4.0,
) -> Response:
    """Upscale one image x4 (multipart field `image`, or the raw body with an image/* content type).

    RGB, RGBA, gray, palette, 16-bit and CMYK inputs are accepted; EXIF orientation is applied, the ICC
    profile kept, alpha upscaled separately; animations use their first frame (`X-Animated-Input`).
    The response carries `X-Seed`, `X-Request-ID` and `Server-Timing`.
    """
    return await upscale(state, request, UpscaleOptions(fmt, quality, seed, outscale))


@router.get("/v1/models", dependencies=[Depends(require_api_key)], response_model=ModelList, tags=["models"])
async def list_models(state: State) -> ModelList:
    """The served model, from the model file's metadata."""
    if state.backend is None:
        raise NotReady("the model is not loaded yet")
    info = state.backend.info
    limits = state.batcher.batch_limits if state.batcher else {}
    batch = limits.get(info.tile_size, state.settings.max_batch_tiles)
    card = ModelCard(
        name=info.name,
        version=info.version,
        scale=info.scale,
        tile_size=info.tile_size,
        tile_sizes=list(info.tile_sizes),
        tile_overlap=state.settings.tile_overlap,
        max_batch_tiles=batch,
        backend=info.backend,
        precision=info.precision,
        config_hash=info.config_hash,
        schedule=info.schedule,
        training=info.training,
    )
    return ModelList(models=[card])


@router.get("/healthz", response_model=Status, tags=["health"])
async def healthz() -> Status:
    """The process is alive (liveness probe)."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: _ERRORS[503]}, tags=["health"])
async def readyz(state: State) -> Status:
    """The model is loaded and warm, and the server is not draining (readiness probe)."""
    if state.draining:
        raise Draining("the service is shutting down")
    if not state.ready:
        raise NotReady("the model is not loaded yet")
    return Status(status="ready")


@router.get("/metrics", response_class=PlainTextResponse, tags=["health"])
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
