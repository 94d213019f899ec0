"""One upscale request from body to response: read, check, admit, decode+tile, batch, blend, encode.

CPU-heavy steps run on the state's thread pool; the event loop only moves bytes and futures.
"""

import asyncio
import contextvars
import functools
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service.batcher import Batcher, Job, TileResult
from service.errors import (
    BadRequest,
    ClientClosed,
    DeadlineExceeded,
    Draining,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from service.imageio import INPUT_MEDIA_TYPES, MEDIA_TYPE, DecodedImage, OutputFormat, compose, decode, encode
from service.imageio import open_image as open_image_header
from service.state import ServiceState
from service.tiling import TileBatch, TilePlan, blend_tiles, plan_tiles, tile_inputs

T = TypeVar("T")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class UpscaleOptions:
    format: OutputFormat = "png"
    quality: int | None = None
    seed: int | None = None
    outscale: float = 4.0


async def upscale(state: ServiceState, request: Request, options: UpscaleOptions) -> Response:
    settings, batcher = state.settings, state.batcher
    if state.draining:
        raise Draining("the service is shutting down")
    if not state.ready or batcher is None or state.backend is None:
        raise NotReady("the model is not loaded yet")
    deadline = request.state.started + settings.request_timeout_s
    info = state.backend.info

    batcher.refuse_if_full()  # at overload most refusals happen here, before the body is even read
    data = await read_image_bytes(request, settings.max_upload_bytes)
    image = open_image_header(data, settings.max_input_pixels)
    # The layout's cost is symmetric in height and width, so EXIF rotation in decoding does not change it.
    layout = plan_tiles(image.height, image.width, info.tile_sizes, settings.tile_overlap)
    admission = batcher.admit(layout.cost(info.tile_size))
    seed = secrets.randbits(63) if options.seed is None else options.seed
    t0 = time.perf_counter()
    try:
        decoded, plan, tiles = await _in_pool(
            state, _prepare, image, info.tile_sizes, settings.tile_overlap, seed
        )
        job = batcher.submit(admission, tiles, deadline)
    finally:
        admission.release()  # no-op once submitted
    t1 = time.perf_counter()
    result = await _wait_for(request, batcher, job, deadline, settings.request_timeout_s)
    t2 = time.perf_counter()
    body = await _in_pool(state, _finish, decoded, plan, result, options, info.scale)
    t3 = time.perf_counter()

    timing = {"decode": t1 - t0, "queue": result.queue_s, "inference": result.inference_s, "encode": t3 - t2}
    headers = {
        "X-Seed": str(seed),
        "Server-Timing": ", ".join(f"{name};dur={1000 * s:.1f}" for name, s in timing.items()),
    }
    if decoded.frames > 1:
        headers["X-Animated-Input"] = f"frames={decoded.frames}; used=first"
    return Response(body, media_type=MEDIA_TYPE[options.format], headers=headers)


async def read_image_bytes(request: Request, limit: int) -> bytes:
    """The image from multipart field `image` or a raw `image/*` body; the limit holds while streaming."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data" and not media.startswith("image/"):
        raise UnsupportedMediaType(
            "send the image as multipart field `image` or as the body with an image/* type"
        )
    _check_media(media)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("invalid Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    except ClientDisconnect:
        raise ClientClosed("the client disconnected during the upload") from None
    if media == "multipart/form-data":
        return await _multipart_image(request, bytes(body))
    if not body:
        raise BadRequest("the body is empty")
    return bytes(body)


def _check_media(media: str | None) -> None:
    if media and media.startswith("image/") and media not in INPUT_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"{media} is not supported; send one of {', '.join(sorted(INPUT_MEDIA_TYPES))}"
        )


class _InMemoryMultiPart(MultiPartParser):
    """The body is already in memory and under the byte limit: spooling parts to temp files (Starlette's
    default above 1 MB) would only cost time, 4x for a 20 MB upload."""

    spool_max_size = 1 << 62


async def _multipart_image(request: Request, body: bytes) -> bytes:
    async def stream():
        yield body

    parser = _InMemoryMultiPart(request.headers, stream(), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise BadRequest(f"malformed multipart body: {e.message}") from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise BadRequest("the multipart body has no file field `image`")
        _check_media((upload.content_type or "").lower())
        data = await upload.read()
    finally:
        await form.close()
    if not data:
        raise BadRequest("the image part is empty")
    return data


async def _in_pool(state: ServiceState, fn: Callable[..., T], *args: object) -> T:
    """Run on the CPU pool, keeping the request id for log lines written there."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(state.cpu_pool, call)


def _prepare(
    image: Image.Image, sizes: tuple[int, ...], overlap: int, seed: int
) -> tuple[DecodedImage, TilePlan, dict[int, TileBatch]]:
    decoded = decode(image)
    height, width = decoded.rgb.shape[:2]
    plan = plan_tiles(height, width, sizes, overlap)
    return decoded, plan, tile_inputs(decoded.rgb, plan, seed)


def _finish(
    decoded: DecodedImage, plan: TilePlan, result: TileResult, options: UpscaleOptions, scale: int
) -> bytes:
    chunks = {size: itertools.chain.from_iterable(pieces) for size, pieces in result.chunks.items()}
    sr = blend_tiles(chunks, plan, scale)
    image = compose(decoded, sr, options.outscale, scale)
    return encode(image, options.format, options.quality, decoded.icc_profile)


async def _wait_for(
    request: Request, batcher: Batcher, job: Job, deadline: float, timeout_s: float
) -> TileResult:
    """The job's result, unless the client leaves or the deadline passes first: then its tiles are dropped."""
    left = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {job.future, left},
            timeout=max(0.0, deadline - time.perf_counter()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    except asyncio.CancelledError:  # the server gave up on this request (forced shutdown)
        batcher.cancel(job, "cancelled")
        raise
    finally:
        left.cancel()
    if job.future in done:
        return job.future.result()
    if left in done:
        batcher.cancel(job, "disconnect")
        raise ClientClosed("the client disconnected")
    batcher.cancel(job, "deadline")
    raise DeadlineExceeded(f"no result within the request timeout of {timeout_s:g} s")


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so this is all that comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
