"""The real process: `python -m service` under uvicorn, started, drained with SIGTERM, or refused."""

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.onnx_fixture import build_fixture_model
from tests.service_support import encoded, noise_image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env=os.environ | {"RSD_LOG_LEVEL": "warning"} | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_fixture_model(tmp_path_factory.mktemp("model") / "fixture.onnx", tile=16)


def test_sigterm_drains_in_flight_requests_and_exits_0(model):
    """8 requests wait 1.5 s for a fuller batch when SIGTERM arrives: all complete, new ones get 503."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "RSD_MODEL_PATH": str(model),
        "RSD_PORT": str(port),
        "RSD_TILE_OVERLAP": "4",
        "RSD_MAX_BATCH_TILES": "64",
        "RSD_MAX_WAIT_MS": "1500",
        "RSD_DRAIN_DELAY_S": "0.5",
    }
    process = start(env)
    try:
        wait_ready(url, process)
        body = encoded(noise_image(16, 16))

        def upscale(_: int) -> int:
            return httpx.post(
                f"{url}/v1/upscale", content=body, headers={"content-type": "image/png"}, timeout=30
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            in_flight = [pool.submit(upscale, i) for i in range(8)]
            while "rsd_queue_tiles 8.0" not in httpx.get(f"{url}/metrics").text:
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            ready = httpx.get(f"{url}/readyz")
            late = httpx.post(f"{url}/v1/upscale", content=body, headers={"content-type": "image/png"})
            statuses = [f.result() for f in in_flight]
        assert statuses == [200] * 8
        assert ready.status_code == 503 and ready.json()["error"]["type"] == "draining"
        assert late.status_code == 503
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_missing_model_fails_at_start_with_one_clear_line(tmp_path):
    missing = tmp_path / "nope.onnx"
    process = start({"RSD_MODEL_PATH": str(missing), "RSD_PORT": str(free_port())})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip() == f"rsd serve: model not found at {missing} (set RSD_MODEL_PATH)"


def test_the_service_never_imports_torch_by_default():
    code = "import sys, service.app, service.cli, service.offline; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
