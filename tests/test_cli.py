"""`rsd upscale` and `rsd serve` argument handling, on a real fixture graph."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rsd.cli import app
from rsd.contract import write_set
from service.offline import first_graph_size
from tests.onnx_fixture import build_fixture_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "fixture.onnx"
    build_fixture_model(path, tile=16)
    return path


def test_upscale_folders_recursively_and_skips_unreadable_files(tmp_path, model):
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(src / "nested" / "a.png")
    Image.fromarray(rng.integers(0, 255, (17, 9, 3), dtype=np.uint8)).save(src / "b.jpg")
    (src / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["upscale", str(src), "--model", str(model), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "upscaled 2 of 3 images" in result.output
    assert "skipping" in result.output and "broken.png" in result.output
    assert Image.open(tmp_path / "out" / "nested" / "a.png").size == (120, 80)
    assert Image.open(tmp_path / "out" / "b.png").size == (36, 68)


def test_upscale_format_outscale_and_seed(tmp_path, model):
    src = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(src)
    args = ["upscale", str(src), "--model", str(model), "--format", "webp", "--outscale", "2", "--seed", "3"]
    first = runner.invoke(app, [*args, "-o", str(tmp_path / "o1")])
    second = runner.invoke(app, [*args, "-o", str(tmp_path / "o2")])
    assert first.exit_code == second.exit_code == 0
    assert Image.open(tmp_path / "o1" / "a.webp").size == (32, 32)
    assert (tmp_path / "o1" / "a.webp").read_bytes() == (tmp_path / "o2" / "a.webp").read_bytes()


def test_upscale_rejects_a_tile_the_model_does_not_have(tmp_path, model):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    result = runner.invoke(app, ["upscale", str(src), "--model", str(model), "--tile", "128"])
    assert result.exit_code == 2
    assert "model not found" in result.output


def test_upscale_runs_a_model_set_or_the_graph_of_one_size_from_it(tmp_path):
    graphs = {tile: build_fixture_model(tmp_path / f"set-t{tile}.onnx", tile=tile) for tile in (16, 32)}
    manifest = write_set(tmp_path / "set.json", 16, graphs)
    src = tmp_path / "a.png"
    Image.fromarray(np.full((40, 70, 3), 90, np.uint8)).save(src)
    for out, extra in (("all", []), ("one", ["--tile", "16"])):
        args = ["upscale", str(src), "--model", str(manifest), "-o", str(tmp_path / out), *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert Image.open(tmp_path / out / "a.png").size == (280, 160)
    result = runner.invoke(app, ["upscale", str(src), "--model", str(manifest), "--tile", "64"])
    assert result.exit_code == 2 and "set-t64.onnx" in result.output


def test_upscale_picks_the_graph_of_its_first_photos_largest_tile_to_load_first(tmp_path):
    """A 30x30 photo is one tile of 32: `rsd upscale` loads that graph first, not the set's tile_size 16."""
    graphs = {tile: build_fixture_model(tmp_path / f"set-t{tile}.onnx", tile=tile) for tile in (16, 32)}
    manifest = write_set(tmp_path / "set.json", 16, graphs)
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert first_graph_size(manifest, tmp_path / "a.png", overlap=8) == 32
    assert first_graph_size(manifest, tmp_path / "broken.png", overlap=8) is None  # decoding reports it
    assert first_graph_size(graphs[16], tmp_path / "a.png", overlap=8) is None  # one graph: nothing to pick


def test_upscale_without_a_model_file_exits_2_with_one_line(tmp_path):
    result = runner.invoke(app, ["upscale", str(tmp_path), "--model", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 2
    assert "model not found" in result.output


@pytest.mark.parametrize(("source", "out"), [("model", "e.plan"), ("set.json", "engines.json")])
def test_export_trt_without_tensorrt_or_gpu_exits_2_with_one_line(tmp_path, source, out):
    result = runner.invoke(app, ["export", "trt", str(tmp_path / source), "--out", str(tmp_path / out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot build a TensorRT engine here")


def test_upscale_reads_the_services_variables_and_refuses_bad_values(tmp_path, model):
    """RSD_THREADS, RSD_CACHE_DIR, RSD_TILE_OVERLAP and RSD_MAX_BATCH_TILES mean what they mean to the
    service; a bad value is named, with exit status 2, before any model loads."""
    src = tmp_path / "a.png"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(src)
    args = ["upscale", str(src), "--model", str(model), "-o", str(tmp_path / "out")]
    env = {"RSD_THREADS": "1", "RSD_CACHE_DIR": str(tmp_path / "cache"), "RSD_TILE_OVERLAP": "4",
           "RSD_MAX_BATCH_TILES": "1"}  # fmt: skip
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "a.png").size == (80, 80) and any((tmp_path / "cache").iterdir())
    for name, value in (("RSD_TILE_OVERLAP", "-1"), ("RSD_MAX_BATCH_TILES", "0"), ("RSD_THREADS", "all")):
        result = runner.invoke(app, args, env={name: value})
        assert result.exit_code == 2 and name in result.output, (name, result.output)
