"""The ORT session cache (service/backends/ort_cache.py) and the torch- and web-free `rsd upscale` start."""

import logging
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service import filecache
from service.backends import ort_cache
from service.backends.onnxruntime import OnnxRuntimeBackend
from tests.onnx_fixture import build_fixture_model
from tests.script_support import REPO


@pytest.fixture
def model(tmp_path):
    """A fixture graph with a conv stack, so ORT's CPU layout optimisations have something to rewrite."""
    return build_fixture_model(tmp_path / "m.onnx", tile=16, width=16, depth=2)


def entries(cache_dir):
    """The cached graphs (each keeps its weights in a `.data` file beside it)."""
    return sorted(p.name for p in (cache_dir / "ort").iterdir() if p.suffix != ".data")


def spy_sessions(monkeypatch) -> list[str]:
    """The paths every ORT session is created from, from now on."""
    loaded = []
    real = ort.InferenceSession

    def spy(path, *args, **kwargs):
        loaded.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ort_cache.ort, "InferenceSession", spy)
    return loaded


def run(backend: OnnxRuntimeBackend) -> np.ndarray:
    rng = np.random.default_rng(0)
    lq = rng.random((2, 3, 16, 16), dtype=np.float32)
    return backend.run(
        lq, rng.standard_normal(lq.shape, np.float32), rng.standard_normal((2, 1, 16, 16), np.float32)
    )


def test_miss_writes_the_entry_and_leaves_no_partial_file(tmp_path, model):
    OnnxRuntimeBackend(model, threads=1, cache_dir=tmp_path / "cache")
    (name,) = entries(tmp_path / "cache")
    assert name.startswith("m-") and name.endswith(".onnx"), "no partial file is left beside it"


def test_hit_loads_the_entry_without_optimising_or_hashing_again(tmp_path, model, monkeypatch):
    cache = tmp_path / "cache"
    OnnxRuntimeBackend(model, threads=1, cache_dir=cache)
    entry = cache / "ort" / entries(cache)[0]
    written = entry.stat().st_mtime_ns
    loaded = spy_sessions(monkeypatch)
    hashed = []
    monkeypatch.setattr(filecache, "file_sha256", lambda path: hashed.append(path))
    backend = OnnxRuntimeBackend(model, threads=1, cache_dir=cache)
    assert loaded == [str(entry)] and not hashed and entry.stat().st_mtime_ns == written
    assert backend.info.name == "fixture-x4" and backend.info.tile_size == 16, "metadata survives the cache"


def test_a_rewritten_model_file_gets_a_new_entry(tmp_path, model):
    cache = tmp_path / "cache"
    OnnxRuntimeBackend(model, threads=1, cache_dir=cache)
    build_fixture_model(model, tile=8)  # same path, new content
    assert OnnxRuntimeBackend(model, threads=1, cache_dir=cache).info.tile_size == 8
    assert len(entries(cache)) == 2


def test_corrupt_entry_is_rebuilt_with_a_warning(tmp_path, model, caplog):
    cache = tmp_path / "cache"
    expected = run(OnnxRuntimeBackend(model, threads=1, cache_dir=cache))
    entry = cache / "ort" / entries(cache)[0]
    entry.write_bytes(b"half a graph")
    with caplog.at_level(logging.WARNING):
        backend = OnnxRuntimeBackend(model, threads=1, cache_dir=cache)
    assert "does not load" in caplog.text
    np.testing.assert_array_equal(run(backend), expected)
    assert entry.stat().st_size > 100, "the rebuilt entry replaced the corrupt one"


def test_unwritable_cache_warns_and_serves(tmp_path, model, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING):
        backend = OnnxRuntimeBackend(model, threads=1, cache_dir=blocked / "cache")
    assert "cache unusable" in caplog.text and run(backend).shape == (2, 3, 64, 64)


def test_cached_sessions_compute_what_a_fresh_session_does(tmp_path, model):
    fresh = run(OnnxRuntimeBackend(model, threads=1))
    cache = tmp_path / "cache"
    miss = run(OnnxRuntimeBackend(model, threads=1, cache_dir=cache))
    hit = run(OnnxRuntimeBackend(model, threads=1, cache_dir=cache))
    np.testing.assert_allclose(miss, fresh, rtol=0, atol=1e-6)
    np.testing.assert_allclose(hit, fresh, rtol=0, atol=1e-6)


def test_published_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "entry"
    target.write_text("old")
    with pytest.raises(RuntimeError), filecache.published(target) as partial:
        partial.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_upscale_imports_neither_the_web_stack_nor_the_settings_nor_torch(tmp_path, model):
    """The real command in a fresh interpreter; `-X importtime` lists every module it imported. Its options
    read the service's RSD_ variables (here RSD_CACHE_DIR) without the service's Settings (pydantic-settings;
    typer itself brings pydantic)."""
    Image.new("RGB", (20, 20), (90, 120, 30)).save(tmp_path / "in.png")
    env = {"RSD_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rsd.cli", "upscale", str(tmp_path / "in.png"),
         "--model", str(model), "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(tmp_path / "out" / "in.png").size == (80, 80)
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line
    }
    assert "onnxruntime" in imported
    assert not imported & {
        "fastapi",
        "starlette",
        "uvicorn",
        "prometheus_client",
        "pydantic_settings",
        "torch",
    }
    assert any((tmp_path / "cache").iterdir())
