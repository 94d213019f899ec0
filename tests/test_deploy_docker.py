"""The Dockerfile, its context, the compose file, the pins and the GPU entrypoint, checked without a Docker
engine: lint, structure, and agreement with the service's settings, port and shutdown timing."""

import ast
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import onnx
import pytest
import tomllib
from packaging.requirements import Requirement

import rsd
from service.backends.base import ModelInfo
from tests.deploy_support import (
    DOCKERFILE,
    REPO,
    compose_env_defaults,
    compose_file,
    context_files,
    dockerfile_stages,
    dockerignore_rules,
    in_context,
    load_gpu_entrypoint,
    settings_from,
    unknown_settings,
    worst_shutdown_s,
)
from tests.onnx_fixture import build_fixture_model

BIN = Path(sys.executable).parent  # hadolint and shellcheck come with the dev extra's wheels
TARGETS = ("cpu", "gpu")


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} not found: install the dev extra (make venv)"
    return path


def lint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True)


# ---- lint ---------------------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_strict(tmp_path: Path) -> None:
    """Any finding fails the lint (default threshold), so the test above can fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install fastapi\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3013" in result.stdout  # unpinned pip install


def test_install_script_passes_shellcheck() -> None:
    result = subprocess.run(
        [tool("shellcheck"), str(REPO / "docker" / "install.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


# ---- Dockerfile structure -----------------------------------------------------------------------------


def test_base_images_are_pinned() -> None:
    stages = dockerfile_stages()
    external = {s.base for s in stages.values() if s.base not in stages}
    assert len(external) == 2
    for image in external:
        name, _, tag = image.split("@")[0].rpartition(":")
        assert name and re.fullmatch(r"\d+\.\d+\.\d+-.+", tag), f"{image}: pin a full version tag"
    python = next(i for i in external if i.startswith("python:"))
    assert re.search(r"@sha256:[0-9a-f]{64}$", python), "the CPU base is pinned by digest"


def test_targets_install_with_the_tested_script() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "cpu", "`docker build .` without --target gives the CPU image"
    for target in TARGETS:
        (run,) = [a for a in stages[f"{target}-build"].args("RUN") if "docker/install.sh" in a]
        assert run.split("docker/install.sh", 1)[1].split() == ["/opt/rsd/venv", target]
        assert f"--from={target}-build /opt/rsd/venv /opt/rsd/venv" in stages[target].args("COPY")


@pytest.mark.parametrize("target", TARGETS)
def test_runtime_stage_settings(target: str) -> None:
    stage = dockerfile_stages()[target]
    env = stage.env()
    assert not unknown_settings(env)
    settings = settings_from({k: v for k, v in env.items() if k.startswith("RSD_")})
    assert settings.host == "0.0.0.0"
    assert stage.args("EXPOSE") == [str(settings.port)]
    model_copy = next(dest for sources, dest in stage.copies() if sources == ["models/default"])
    assert Path(env["RSD_MODEL_PATH"]).parent == Path(model_copy)
    assert env["PATH"].startswith("/opt/rsd/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # the root filesystem is read-only at run time


@pytest.mark.parametrize("target", TARGETS)
def test_runtime_stage_is_non_root_with_a_readiness_healthcheck(target: str) -> None:
    stage = dockerfile_stages()[target]
    user = stage.args("USER")[-1]
    assert re.fullmatch(r"\d+:\d+", user) and not user.startswith("0:")
    assert [i for i, _ in stage.instructions][-1] == "CMD"
    assert json.loads(stage.args("CMD")[0]) == ["rsd", "serve"]
    (healthcheck,) = stage.args("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "/opt/rsd/docker/healthcheck.py"]')
    assert [s for sources, _ in stage.copies() for s in sources if "health" in s] == ["docker/healthcheck.py"]
    if target == "gpu":
        assert json.loads(stage.args("ENTRYPOINT")[0]) == ["python", "/opt/rsd/docker/gpu_entrypoint.py"]
        assert stage.env()["RSD_BACKEND"] == "tensorrt"
        assert stage.env()[load_gpu_entrypoint().CACHE_ENV].startswith("/var/cache/rsd/")
        assert stage.args("VOLUME") == ['["/var/cache/rsd"]']


@pytest.mark.parametrize("target", TARGETS)
def test_image_version_matches_the_package_and_compose_tags(target: str) -> None:
    (label,) = dockerfile_stages()[target].args("LABEL")
    labels = dict(pair.split("=", 1) for pair in shlex.split(label))
    assert labels["org.opencontainers.image.version"] == rsd.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    services = {s["build"]["target"]: s for s in compose_file()["services"].values()}
    assert services[target]["image"] == f"rsd:{rsd.__version__}-{target}"


def test_dockerignore_sends_what_the_images_copy_and_nothing_heavy() -> None:
    rules = dockerignore_rules()
    for stage in dockerfile_stages().values():
        for sources, _ in stage.copies():
            for source in sources:
                if source == "models/default" and not (REPO / source).exists():
                    assert in_context("models/default/rsd-tiny-x4.json", rules)
                    continue  # the default model is still being trained
                assert context_files(source), f"COPY {source}: nothing reaches the builder"
    for heavy in (".venv/bin/python", "data/x.png", "runs/a/model.safetensors", ".git/HEAD", "cache/w.pth"):
        assert not in_context(heavy, rules), heavy
    assert not in_context("service/__pycache__/app.cpython-311.pyc", rules)
    assert not in_context("models/other/big.onnx", rules)
    assert in_context("service/app.py", rules)


# ---- pins ---------------------------------------------------------------------------------------------


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "docker" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_serving_requirement_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    wanted = [
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *extras["serve"],
        *extras["cpu"],
        *extras["gpu"],
        *[r for r in extras["train"] if r.startswith("torch")],  # the TensorRT backend's device buffers
        "tensorrt-cu13",
        "onnx",
    ]
    pins = constraints()
    for text in wanted:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in docker/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {text}"
    install = (REPO / "docker" / "install.sh").read_text()
    assert '"${project}[serve,gpu]" tensorrt-cu13 torch onnx)' in install


# ---- compose ------------------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_spec() -> None:
    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(compose_file(), schema)


def test_compose_runs_cpu_by_default_and_gpu_on_profile() -> None:
    services = compose_file()["services"]
    default = [name for name, s in services.items() if not s.get("profiles")]
    assert default == ["rsd"]
    assert services["rsd"]["build"]["target"] == "cpu"
    gpu = services["rsd-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    cache = dockerfile_stages()["gpu"].env()[load_gpu_entrypoint().CACHE_ENV]
    mounts = {Path(v.split(":")[1].split()[0]) for v in gpu["volumes"]}
    assert any(m in Path(cache).parents for m in mounts), "the engine cache is on a volume"


@pytest.mark.parametrize("name", ["rsd", "rsd-gpu"])
def test_compose_service_settings_and_shutdown(name: str) -> None:
    service = compose_file()["services"][name]
    env = compose_env_defaults(service["environment"])
    assert not unknown_settings(env)
    settings = settings_from(env)
    published = {int(p.split(":")[-1]) for p in service["ports"]}
    assert published == {settings.port}
    grace = float(service["stop_grace_period"].removesuffix("s"))
    assert grace >= worst_shutdown_s(settings) + 5
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert any(t.startswith("/tmp") for t in service["tmpfs"])


# ---- GPU entrypoint and healthcheck -------------------------------------------------------------------


def test_engine_cache_key_covers_model_tensorrt_gpu_and_batch(tmp_path: Path) -> None:
    entry = load_gpu_entrypoint()
    facts = {
        "onnx_sha256": "ab" * 32,
        "trt_version": "10.16.1.11",
        "gpu": "NVIDIA H100 sm90",
        "max_batch": 32,
    }
    path = entry.engine_path(Path("m/rsd-tiny-x4.onnx"), tmp_path, **facts)
    assert path.parent == tmp_path and path.name.startswith("rsd-tiny-x4-b32-") and path.suffix == ".plan"
    assert entry.engine_path(Path("m/rsd-tiny-x4.onnx"), tmp_path, **facts) == path
    for key, other in {
        "onnx_sha256": "cd" * 32,
        "trt_version": "10.9",
        "gpu": "NVIDIA L4 sm89",
        "max_batch": 16,
    }.items():
        assert entry.engine_path(Path("m/rsd-tiny-x4.onnx"), tmp_path, **{**facts, key: other}) != path


def test_engine_sidecar_carries_the_onnx_metadata(tmp_path: Path) -> None:
    """The JSON written beside an engine is what the TensorRT backend reads as the model's metadata."""
    entry = load_gpu_entrypoint()
    model = build_fixture_model(tmp_path / "m.onnx", tile=16)
    facts = entry.engine_sidecar(model, trt_version="10.16.1.11", gpu=("NVIDIA H100", "9.0"), max_batch=32)
    metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert {k: v for k, v in facts.items() if k.startswith("rsd.")} == metadata
    assert facts["tensorrt.profile"] == {"min": 1, "opt": 32, "max": 32}
    assert facts["tensorrt.compute_capability"] == "9.0"
    assert facts["tensorrt.onnx_sha256"] == entry.file_sha256(model)
    info = ModelInfo.from_metadata(
        json.loads(json.dumps(facts)),
        backend="tensorrt",
        default_name="m",
        tile_from_shape=16,
        precision="fp32",
        max_batch=32,
    )
    assert (info.name, info.tile_size, info.scale) == ("fixture-x4", 16, 4)


def module_level_imports(path: Path) -> set[str]:
    """Top-level names a module imports when it is loaded (imports inside functions are lazy)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names - {"__future__"}


def test_gpu_image_ships_what_the_entrypoint_imports() -> None:
    """The entrypoint and the model_export modules it loads need only stdlib, the packages the gpu-build
    stage copies, and what install.sh installs for gpu (the TensorRT build itself is imported lazily)."""
    copied = {Path(src).name for sources, _ in dockerfile_stages()["gpu-build"].copies() for src in sources}
    installed = {"numpy", "onnx", "pydantic", "pydantic_settings", "tensorrt", "torch", "onnxruntime"}
    modules = [REPO / "docker" / "gpu_entrypoint.py"]
    modules += [REPO / "model_export" / f"{m}.py" for m in ("__init__", "metadata", "tensorrt", "trt_build")]
    for module in modules:
        outside = module_level_imports(module) - set(sys.stdlib_module_names) - copied - installed
        assert not outside, f"{module.relative_to(REPO)} imports {outside}, which the gpu image lacks"


def run_entrypoint(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    print_model = [sys.executable, "-c", "import os; print(os.environ['RSD_MODEL_PATH'])"]
    script = str(REPO / "docker" / "gpu_entrypoint.py")
    return subprocess.run(
        [sys.executable, script, *print_model],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_entrypoint_passes_other_backends_and_engines_through(tmp_path: Path) -> None:
    onnx_run = run_entrypoint(tmp_path, RSD_BACKEND="onnxruntime", RSD_MODEL_PATH="/m/x.onnx")
    assert onnx_run.returncode == 0, onnx_run.stderr
    assert onnx_run.stdout.strip() == "/m/x.onnx"
    engine_run = run_entrypoint(tmp_path, RSD_BACKEND="tensorrt", RSD_MODEL_PATH="/m/x.plan")
    assert engine_run.stdout.strip() == "/m/x.plan"


def test_entrypoint_without_tensorrt_says_so(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here, so its missing-package message cannot be shown")
    result = run_entrypoint(tmp_path, RSD_BACKEND="tensorrt", RSD_MODEL_PATH=str(tmp_path / "x.onnx"))
    assert result.returncode == 1
    assert "needs the tensorrt package" in result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the check runs: nothing listens there
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "healthcheck.py")],
        env={"RSD_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "readyz" in result.stderr
