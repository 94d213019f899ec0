"""The images' install, run for real: docker/install.sh into a fresh virtual environment, from exactly the
files the Dockerfile's cpu-build stage copies, then `rsd serve` from it answering a real photo.

Uses the embedded default model when models/default/rsd-tiny-x4.json exists, else the small ONNX model
of tests/onnx_fixture.py (same graph contract); the test output says which. Downloads come from PyPI
through pip's cache, so a second run takes well under a minute.
"""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data

from tests.deploy_support import (
    REPO,
    dockerfile_stages,
    materialize_stage_context,
    queue_metric,
    settings_from,
    worst_shutdown_s,
)
from tests.onnx_fixture import build_fixture_model

DEFAULT_MODEL = REPO / "models" / "default" / "rsd-tiny-x4.json"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned() -> dict[str, str]:
    lines = (REPO / "docker" / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {name.lower().replace("_", "-"): version for name, version in pairs}


def photo_png() -> bytes:
    """skimage's astronaut (512x512), downscaled x4 to a 128x128 PNG: a real photo, a few tiles."""
    image = Image.fromarray(data.astronaut()).resize((128, 128), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv docker/install.sh builds from the cpu-build stage's context."""
    root = tmp_path_factory.mktemp("image")
    context = materialize_stage_context(dockerfile_stages()["cpu-build"], root / "src")
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_CONSTRAINT")}
    env["PYTHON"] = sys.executable  # venv builds the new environment on the base interpreter, isolated
    result = subprocess.run(
        ["bash", str(context / "docker" / "install.sh"), str(venv), "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return venv


def test_install_is_pinned_and_torch_free(installed: Path) -> None:
    python = installed / "bin" / "python"
    probe = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('onnxruntime') is not None)"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert found == ["None", "True"], "the serving install has onnxruntime and no torch"
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    )
    pins = pinned()
    for line in freeze.stdout.splitlines():
        if line.startswith(("rsd ", "rsd==", "pip==", "setuptools==", "wheel==")):
            continue  # the project itself, and the venv's own installer
        name, version = line.split("==")
        assert pins.get(name.lower().replace("_", "-")) == version, f"{line} is not pinned in constraints.txt"


def test_installed_service_upscales_a_photo_and_drains_on_sigterm(installed: Path, tmp_path: Path) -> None:
    if DEFAULT_MODEL.is_file():
        model, source = DEFAULT_MODEL, "the embedded default model"
    else:
        model, source = build_fixture_model(tmp_path / "fixture-x4.onnx", tile=64), "the test fixture model"
    print(f"serving {source}: {model}")
    port = free_port()
    settings_env = {"RSD_MODEL_PATH": str(model), "RSD_HOST": "127.0.0.1", "RSD_PORT": str(port)}
    env = {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), **settings_env}
    server = subprocess.Popen(
        [installed / "bin" / "rsd", "serve"],
        cwd=tmp_path,  # nothing of the checkout is importable from here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.communicate()[0]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the service did not become ready within 120 s")

        health = subprocess.run(
            [installed / "bin" / "python", REPO / "docker" / "healthcheck.py"], env=env, capture_output=True
        )
        assert health.returncode == 0, health.stderr

        response = httpx.post(
            f"{base}/v1/upscale", files={"image": ("astronaut.png", photo_png(), "image/png")}, timeout=120
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        upscaled = Image.open(io.BytesIO(response.content))
        assert upscaled.size == (512, 512) and upscaled.mode == "RGB"
        assert np.asarray(upscaled).std() > 10  # a picture, not a flat fill

        name = httpx.get(f"{base}/v1/models", timeout=10).json()["models"][0]["name"]
        print(f"served model: {name}")
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert f"\n{queue_metric()[0]} " in metrics, (
            "the autoscaling metric is exposed by the installed service"
        )

        server.send_signal(signal.SIGTERM)
        limit = worst_shutdown_s(settings_from(settings_env)) + 10
        assert server.wait(timeout=limit) == 0, "a drained shutdown exits 0"
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
