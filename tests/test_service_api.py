"""The HTTP API against the real app and the real ONNX Runtime backend (fixture model, tile 16)."""

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms

from rsd.contract import write_set
from service.app import create_app
from service.backends import load_backend
from service.offline import upscale_bytes
from service.settings import Settings
from service.tiling import plan_tiles
from tests.onnx_fixture import build_fixture_model
from tests.service_support import encoded, metric, noise_image, running

TILE = 16


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    model = build_fixture_model(tmp_path_factory.mktemp("model") / "fixture.onnx", tile=TILE)
    return Settings(model_path=model, tile_overlap=4, max_batch_tiles=8, max_wait_ms=2, max_queue_tiles=256)


def call(settings: Settings, scenario):
    """Run `scenario(app, client)` against a freshly started app."""

    async def main():
        async with running(settings) as (app, client):
            return await scenario(app, client)

    return asyncio.run(main())


def post(settings: Settings, body: bytes, content_type: str = "image/png", **params):
    async def scenario(app, client):
        return await client.post(
            "/v1/upscale", content=body, headers={"content-type": content_type}, params=params
        )

    return call(settings, scenario)


def decoded(response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def assert_error(response, status: int, type_: str):
    assert response.status_code == status, response.text if response.status_code != 200 else response.headers
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["type"] == type_ and body["error"]["message"]
    assert response.headers["x-request-id"]


# ---- round trips: every input kind and output format comes back 4x ----------------------------


def _palette_with_transparency() -> Image.Image:
    image = noise_image(20, 12).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.info["transparency"] = 0
    return image


INPUTS = {
    "rgb-png": (lambda: encoded(noise_image(20, 12)), "image/png", "RGB"),
    "rgba-png": (lambda: encoded(noise_image(20, 12, "RGBA")), "image/png", "RGBA"),
    "gray-png": (lambda: encoded(noise_image(20, 12, "L")), "image/png", "L"),
    "gray-alpha-png": (lambda: encoded(noise_image(20, 12, "LA")), "image/png", "LA"),
    "palette-png": (lambda: encoded(noise_image(20, 12, "P")), "image/png", "RGB"),
    "palette-transparent-png": (lambda: encoded(_palette_with_transparency()), "image/png", "RGBA"),
    "gray16-png": (
        lambda: encoded(Image.fromarray((np.arange(240).reshape(12, 20) * 250).astype(np.uint16))),
        "image/png",
        "I;16",
    ),
    "cmyk-jpeg": (lambda: encoded(noise_image(20, 12, "CMYK"), "JPEG"), "image/jpeg", "RGB"),
    "rgb-jpeg": (lambda: encoded(noise_image(20, 12), "JPEG"), "image/jpeg", "RGB"),
    "rgb-webp": (lambda: encoded(noise_image(20, 12), "WEBP"), "image/webp", "RGB"),
    "rgb-tiff": (lambda: encoded(noise_image(20, 12), "TIFF"), "image/tiff", "RGB"),
    "rgb-bmp": (lambda: encoded(noise_image(20, 12), "BMP"), "image/bmp", "RGB"),
    "gif": (lambda: encoded(noise_image(20, 12, "P"), "GIF"), "image/gif", "RGB"),
}
# What a PNG-mode result becomes in the formats that cannot hold it.
JPEG_MODE = {"RGBA": "RGB", "LA": "L", "I;16": "L"}
WEBP_MODE = {"LA": "RGBA", "L": "RGB", "I;16": "RGB"}


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_every_input_kind_round_trips_in_every_format(settings, kind, fmt):
    make, media, png_mode = INPUTS[kind]
    response = post(settings, make(), media, format=fmt)
    image = decoded(response)
    assert response.headers["content-type"] == f"image/{fmt}"
    assert image.size == (80, 48)
    expected = {
        "png": png_mode,
        "jpeg": JPEG_MODE.get(png_mode, png_mode),
        "webp": WEBP_MODE.get(png_mode, png_mode),
    }
    assert image.mode == expected[fmt]


def test_multipart_upload_works_like_a_raw_body(settings):
    body = encoded(noise_image(20, 12))

    async def scenario(app, client):
        multipart = await client.post(
            "/v1/upscale", files={"image": ("x.png", body, "image/png")}, params={"seed": 5}
        )
        raw = await client.post(
            "/v1/upscale", content=body, headers={"content-type": "image/png"}, params={"seed": 5}
        )
        return multipart, raw

    multipart, raw = call(settings, scenario)
    assert decoded(multipart).size == (80, 48)
    assert multipart.content == raw.content


def test_response_headers_carry_request_id_seed_and_server_timing(settings):
    async def scenario(app, client):
        headers = {"content-type": "image/png", "x-request-id": "abc-123"}
        return await client.post("/v1/upscale", content=encoded(noise_image(20, 12)), headers=headers)

    response = call(settings, scenario)
    assert response.headers["x-request-id"] == "abc-123"
    assert int(response.headers["x-seed"]) >= 0
    timing = response.headers["server-timing"]
    for phase in ("queue", "inference", "encode"):
        assert f"{phase};dur=" in timing


def test_same_seed_gives_same_bytes_and_a_returned_seed_reproduces(settings):
    body = encoded(noise_image(24, 20))

    async def scenario(app, client):
        async def one(**params):
            return await client.post(
                "/v1/upscale", content=body, headers={"content-type": "image/png"}, params=params
            )

        a, b, c = await one(seed=42), await one(seed=42), await one(seed=43)
        unseeded = await one()
        again = await one(seed=int(unseeded.headers["x-seed"]))
        return a, b, c, unseeded, again

    a, b, c, unseeded, again = call(settings, scenario)
    assert a.content == b.content and a.headers["x-seed"] == "42"
    assert a.content != c.content  # the noise inputs matter
    assert unseeded.content == again.content


def test_a_model_set_serves_each_image_in_mixed_tile_sizes_like_rsd_upscale(tmp_path, settings):
    """Graphs of 16 and 32: a 40x70 photo is laid out in both sizes; the bytes equal the offline path's."""
    for tile in (TILE, 2 * TILE):
        build_fixture_model(tmp_path / f"m-t{tile}.onnx", tile=tile)
    manifest = write_set(
        tmp_path / "m.json", TILE, {TILE: tmp_path / "m-t16.onnx", 2 * TILE: tmp_path / "m-t32.onnx"}
    )
    served = settings.model_copy(update={"model_path": manifest})
    body = encoded(noise_image(70, 40))
    assert set(plan_tiles(40, 70, (TILE, 2 * TILE), served.tile_overlap).counts()) == {TILE, 2 * TILE}
    response = post(served, body, seed=5)
    assert response.status_code == 200, response.text
    offline = upscale_bytes(body, load_backend(served), seed=5, overlap=served.tile_overlap, max_batch=8)
    assert response.content == offline


def test_outscale_resizes_the_x4_result(settings):
    image = decoded(post(settings, encoded(noise_image(20, 12)), outscale=2.5))
    assert image.size == (50, 30)


def test_quality_changes_lossy_output(settings):
    body = encoded(noise_image(20, 12))
    low = post(settings, body, format="jpeg", quality=5, seed=1).content
    high = post(settings, body, format="jpeg", quality=95, seed=1).content
    assert len(low) < len(high)


def test_constant_colour_comes_back_constant(settings):
    """No seams: a flat 50x37 image spans several overlapping tiles."""
    flat = Image.new("RGB", (50, 37), (200, 90, 30))
    out = np.asarray(decoded(post(settings, encoded(flat))), dtype=np.int16)
    assert out.shape == (148, 200, 3)
    assert np.abs(out - np.array([200, 90, 30])).max() <= 2


def test_alpha_is_upscaled_separately_and_reattached(settings):
    rgba = noise_image(24, 16, "RGBA")
    alpha = np.zeros((16, 24), np.uint8)
    alpha[:, 12:] = 255
    alpha[5, 3] = 128
    rgba.putalpha(Image.fromarray(alpha))
    out = decoded(post(settings, encoded(rgba), format="webp", quality=100))
    assert out.mode == "RGBA"
    out_alpha = np.asarray(decoded(post(settings, encoded(rgba))).getchannel("A"))
    assert out_alpha[:, :40].max() <= 130 and out_alpha[:, 56:].min() == 255  # hard edge stays hard
    assert 100 < out_alpha[22, 14] < 160  # the half-transparent pixel survives


def test_exif_orientation_is_applied(settings):
    """A 20x12 JPEG tagged 'rotate 90 CW' (orientation 6) with a red top-left corner."""
    pixels = np.zeros((12, 20, 3), np.uint8)
    pixels[:4, :4] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    body = encoded(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    out = np.asarray(decoded(post(settings, body, "image/jpeg")))
    assert out.shape == (80, 48, 3)  # rotated: 12x20 -> 48x80
    assert out[4, 42, 0] > 200 and out[4, 42, 1] < 60  # the red corner is now top-right
    assert out[75, 4, 0] < 60


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_icc_profile_is_kept(settings, fmt):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # any valid profile
    body = encoded(noise_image(20, 12), "PNG", icc_profile=icc)
    assert decoded(post(settings, body, format=fmt)).info.get("icc_profile") == icc


def test_animation_uses_the_first_frame_and_says_so(settings):
    frames = [Image.new("RGB", (20, 12), colour) for colour in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    body = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    response = post(settings, body, "image/gif")
    assert response.headers["x-animated-input"] == "frames=3; used=first"
    red = np.asarray(decoded(response).convert("RGB"))[20, 40]
    assert red[0] > 200 and red[2] < 50


def test_sixteen_bit_gray_keeps_its_precision(settings):
    ramp = np.tile(np.linspace(1000, 60000, 20).astype(np.uint16), (12, 1))
    out = np.asarray(decoded(post(settings, encoded(Image.fromarray(ramp)))))
    assert out.dtype == np.uint16
    assert len(np.unique(out)) > 256  # more levels than 8 bits could carry


# ---- errors: each with its status and JSON body ------------------------------------------------


@pytest.mark.parametrize(
    "params", [{"format": "gif"}, {"quality": 0}, {"outscale": 5}, {"seed": -1}, {"outscale": "big"}]
)
def test_bad_options_are_400(settings, params):
    assert_error(post(settings, encoded(noise_image(8, 8)), **params), 400, "bad_request")


def test_malformed_multipart_is_400(settings):
    boundary = "xyz"
    broken = b"--xyz\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n\r\n"  # never closed
    assert_error(post(settings, broken, f"multipart/form-data; boundary={boundary}"), 400, "bad_request")


def test_multipart_without_image_field_is_400(settings):
    async def scenario(app, client):
        return await client.post(
            "/v1/upscale", files={"picture": ("a.png", encoded(noise_image(8, 8)), "image/png")}
        )

    assert_error(call(settings, scenario), 400, "bad_request")


def test_empty_body_is_400(settings):
    assert_error(post(settings, b""), 400, "bad_request")


def test_missing_or_wrong_api_key_is_401(settings):
    keyed = settings.model_copy(update={"api_keys": Settings(api_keys="k1, k2").api_keys})
    body = encoded(noise_image(8, 8))

    async def scenario(app, client):
        url, image = "/v1/upscale", {"content-type": "image/png"}
        missing = await client.post(url, content=body, headers=image)
        wrong = await client.post(url, content=body, headers=image | {"authorization": "Bearer k3"})
        right = await client.post(url, content=body, headers=image | {"authorization": "Bearer k2"})
        models = await client.get("/v1/models")
        health = await client.get("/healthz")
        return missing, wrong, right, models, health

    missing, wrong, right, models, health = call(keyed, scenario)
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(wrong, 401, "unauthorized")
    assert right.status_code == 200
    assert_error(models, 401, "unauthorized")
    assert health.status_code == 200


def test_body_over_the_byte_limit_is_413(settings):
    small = settings.model_copy(update={"max_upload_bytes": 1000})
    assert_error(post(small, encoded(noise_image(64, 64))), 413, "payload_too_large")


def test_pixel_count_over_the_limit_is_413_before_decoding(settings):
    """3000x3000 compresses to a small file; the header alone is enough to refuse it."""
    limited = settings.model_copy(update={"max_input_pixels": 100_000})
    flat = encoded(Image.new("L", (3000, 3000)))
    assert len(flat) < 100_000
    assert_error(post(limited, flat), 413, "payload_too_large")
    bomb = encoded(Image.new("L", (1000, 1000)))  # 10x the limit: Pillow's own bomb check fires first
    assert_error(post(limited, bomb), 413, "payload_too_large")


def test_image_needing_more_tiles_than_the_queue_holds_is_413(settings):
    tiny_queue = settings.model_copy(update={"max_queue_tiles": 8})
    assert_error(post(tiny_queue, encoded(noise_image(60, 60))), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"hello", "text/plain"),
        (b"<svg/>", "image/svg+xml"),
        (encoded(noise_image(8, 8), "PPM"), "image/png"),  # a format Pillow knows but we do not accept
    ],
)
def test_unsupported_type_is_415(settings, body, content_type):
    assert_error(post(settings, body, content_type), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n garbage",
        encoded(noise_image(40, 40))[:200],  # valid header, truncated data
        b"\x00" * 64,
    ],
)
def test_corrupt_image_is_422(settings, body):
    assert_error(post(settings, body), 422, "undecodable_image")


def test_user_input_never_causes_a_500(settings):
    rng = np.random.default_rng(0)
    good = encoded(noise_image(20, 20))
    bodies = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (1, 10, 100, 1000)]
    bodies += [good[:n] for n in (8, 16, 33, 60, 100, len(good) - 1)]
    flipped = bytearray(good)
    flipped[50:60] = b"\xff" * 10
    bodies.append(bytes(flipped))

    async def scenario(app, client):
        return [
            await client.post("/v1/upscale", content=b, headers={"content-type": "image/png"}) for b in bodies
        ]

    for response in call(settings, scenario):
        assert response.status_code < 500, response.text
        assert response.status_code == 200 or response.json()["error"]["type"]


def test_full_queue_is_429_at_once_with_retry_after(settings):
    """Two 4-tile requests wait 500 ms for a fuller batch; a third does not fit the 10-tile queue."""
    slow = settings.model_copy(update={"max_queue_tiles": 10, "max_batch_tiles": 10, "max_wait_ms": 500})
    body = encoded(noise_image(24, 24))  # 4 tiles

    async def scenario(app, client):
        async def one():
            return await client.post("/v1/upscale", content=body, headers={"content-type": "image/png"})

        first = asyncio.ensure_future(one())
        second = asyncio.ensure_future(one())
        while metric(app, "rsd_queue_tiles") < 8:
            await asyncio.sleep(0.005)
        loop = asyncio.get_running_loop()
        start = loop.time()
        third = await one()
        took = loop.time() - start
        return (
            await first,
            await second,
            third,
            took,
            metric(app, "rsd_rejections_total", reason="overloaded"),
        )

    first, second, third, took, rejected = call(slow, scenario)
    assert first.status_code == second.status_code == 200
    assert_error(third, 429, "overloaded")
    assert int(third.headers["retry-after"]) >= 1
    assert took < 0.25 and rejected == 1


def test_not_ready_and_draining_are_503(settings):
    app = create_app(settings)  # lifespan not run: no model yet

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rsd") as client:
            upscale = await client.post("/v1/upscale", content=b"x", headers={"content-type": "image/png"})
            ready = await client.get("/readyz")
            app.state.service.draining = True
            draining = await client.post("/v1/upscale", content=b"x", headers={"content-type": "image/png"})
            ready_draining = await client.get("/readyz")
            return upscale, ready, draining, ready_draining

    upscale, ready, draining, ready_draining = asyncio.run(scenario())
    assert_error(upscale, 503, "not_ready")
    assert_error(ready, 503, "not_ready")
    assert_error(draining, 503, "draining")
    assert_error(ready_draining, 503, "draining")


def test_request_past_its_deadline_is_504_and_its_tiles_are_dropped(settings):
    slow = settings.model_copy(update={"request_timeout_s": 0.2, "max_batch_tiles": 64, "max_wait_ms": 1000})

    async def scenario(app, client):
        tiles_before = metric(app, "rsd_tiles_total")
        response = await client.post(
            "/v1/upscale", content=encoded(noise_image(24, 24)), headers={"content-type": "image/png"}
        )
        await asyncio.sleep(1.0)  # past the batch wait: the dropped tiles must not have run
        dropped = metric(app, "rsd_tiles_dropped_total", reason="deadline")
        return response, dropped, metric(app, "rsd_tiles_total") - tiles_before

    response, dropped, ran = call(slow, scenario)
    assert_error(response, 504, "deadline_exceeded")
    assert dropped == 4 and ran == 0


def test_unknown_route_is_json_404(settings):
    async def scenario(app, client):
        return await client.get("/nope")

    assert_error(call(settings, scenario), 404, "not_found")


# ---- load and cancellation ---------------------------------------------------------------------


def test_64_concurrent_requests_complete_in_shared_batches(settings):
    bodies = [encoded(noise_image(20 + i % 7, 12 + i % 5, seed=i)) for i in range(64)]

    async def scenario(app, client):
        batches_before = metric(app, "rsd_batch_tiles_count")
        tiles_before = metric(app, "rsd_batch_tiles_sum")
        responses = await asyncio.gather(
            *(client.post("/v1/upscale", content=b, headers={"content-type": "image/png"}) for b in bodies)
        )
        batches = metric(app, "rsd_batch_tiles_count") - batches_before
        tiles = metric(app, "rsd_batch_tiles_sum") - tiles_before
        return responses, batches, tiles

    responses, batches, tiles = call(settings, scenario)
    assert all(r.status_code == 200 for r in responses)
    for i, response in enumerate(responses):
        assert Image.open(io.BytesIO(response.content)).size == (4 * (20 + i % 7), 4 * (12 + i % 5))
    assert tiles / batches > 1.5  # batches of more than one tile were formed


def test_client_disconnect_drops_its_tiles_before_the_model(settings):
    """Drive the ASGI app by hand so the client can vanish while its tiles wait for a batch."""
    slow = settings.model_copy(update={"max_batch_tiles": 64, "max_wait_ms": 600})
    body = encoded(noise_image(24, 24))

    async def scenario(app, client):
        gone = asyncio.Event()
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        headers = [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST"}
        scope |= {"scheme": "http", "path": "/v1/upscale", "raw_path": b"/v1/upscale", "root_path": ""}
        scope |= {"query_string": b"", "headers": headers, "client": ("127.0.0.1", 1), "server": ("rsd", 80)}
        tiles_before = metric(app, "rsd_tiles_total")
        request = asyncio.ensure_future(app(scope, receive, send))
        while metric(app, "rsd_queue_tiles") < 4:
            await asyncio.sleep(0.005)
        gone.set()
        await request
        await asyncio.sleep(0.8)  # past the batch wait
        dropped = metric(app, "rsd_tiles_dropped_total", reason="disconnect")
        return dropped, metric(app, "rsd_tiles_total") - tiles_before, sent[0]["status"]

    dropped, ran, status = call(slow, scenario)
    assert dropped == 4 and ran == 0 and status == 499


# ---- the other routes --------------------------------------------------------------------------


def test_health_readiness_models_and_metrics(settings):
    async def scenario(app, client):
        await client.post(
            "/v1/upscale", content=encoded(noise_image(20, 12)), headers={"content-type": "image/png"}
        )
        return [await client.get(path) for path in ("/healthz", "/readyz", "/v1/models", "/metrics")]

    health, ready, models, metrics = call(settings, scenario)
    assert health.json() == {"status": "ok"} and ready.json() == {"status": "ready"}
    (card,) = models.json()["models"]
    assert card["name"] == "fixture-x4" and card["scale"] == 4 and card["tile_size"] == TILE
    assert card["tile_sizes"] == [TILE] and card["max_batch_tiles"] == 8
    assert (
        card["precision"] == "fp32"
        and card["version"] == "0.0-test"
        and card["backend"].startswith("onnxruntime")
    )
    assert card["training"]["source"] == "tests/onnx_fixture.py"
    text = metrics.text
    for name in (
        'rsd_requests_total{route="/v1/upscale",status="200"} 1.0',
        "rsd_request_duration_seconds_bucket",
        "rsd_queue_duration_seconds_bucket",
        "rsd_inference_duration_seconds_bucket",
        "rsd_batch_tiles_bucket",
        "rsd_queue_tiles 0.0",
        "rsd_tiles_total",
        'rsd_model_info{backend="onnxruntime (CPUExecutionProvider)",name="fixture-x4"',
    ):
        assert name in text


def test_docs_are_served_without_any_external_url(settings):
    async def scenario(app, client):
        docs = await client.get("/docs")
        assets = [
            await client.get(p)
            for p in ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css")
        ]
        schema = await client.get("/openapi.json")
        return docs, assets, schema

    docs, assets, schema = call(settings, scenario)
    assert docs.status_code == 200 and "http" not in docs.text.replace("http-equiv", "")
    assert all(a.status_code == 200 and len(a.content) > 10_000 for a in assets)
    body = schema.json()["paths"]["/v1/upscale"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
