"""Shared helpers of the deployment tests: read the Dockerfile, .dockerignore, compose file and the facts
of the service (routes, metric names, settings, shutdown timing) that the deployment files must agree with."""

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from unittest import mock

import yaml

from service.api import router
from service.metrics import Metrics
from service.settings import Settings
from tests.script_support import load_script

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"

# ---- the service's side -------------------------------------------------------------------------------


def app_routes() -> set[str]:
    return {route.path for route in router.routes}


def queue_metric() -> tuple[str, str]:
    """(name, type) of the tile-queue gauge, the autoscaling signal."""
    family = Metrics().queue_tiles.describe()[0]
    return family.name, family.type


def metric_families() -> dict[str, str]:
    """Metric family name -> type (counter, gauge, histogram, info) for every metric the service defines."""
    return {family.name: family.type for family in Metrics().registry.collect()}


def exposed_metric_names() -> set[str]:
    """Every sample name /metrics can show (histograms as _bucket/_sum/_count, counters as _total, ...)."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }
    return {name + s for name, kind in metric_families().items() for s in suffixes[kind]}


def load_gpu_entrypoint() -> ModuleType:
    return load_script("docker/gpu_entrypoint.py")


def unknown_settings(env: Mapping[str, str]) -> set[str]:
    """RSD_* names that neither service.settings nor the GPU entrypoint reads (settings ignore extras,
    so a typo would otherwise pass silently)."""
    known = {f"RSD_{name.upper()}" for name in Settings.model_fields} | {load_gpu_entrypoint().CACHE_ENV}
    return {key for key in env if key.startswith("RSD_")} - known


def settings_from(env: Mapping[str, str]) -> Settings:
    """The Settings the service builds from exactly these RSD_* variables (the test's own are dropped)."""
    others = {k: v for k, v in os.environ.items() if not k.startswith("RSD_")}
    with mock.patch.dict(os.environ, {**others, **env}, clear=True):
        return Settings()


def worst_shutdown_s(settings: Settings) -> float:
    """Longest time from SIGTERM to exit (service/cli.py and service/app.py): the drain delay, then uvicorn
    waits up to shutdown_timeout_s for in-flight requests, then the lifespan waits up to shutdown_timeout_s
    again for the batcher."""
    return settings.drain_delay_s + 2 * settings.shutdown_timeout_s


# ---- Dockerfile ---------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def env(self) -> dict[str, str]:
        """ENV KEY=VALUE pairs (the only ENV form the Dockerfile uses)."""
        pairs = [pair.split("=", 1) for args in self.args("ENV") for pair in args.split()]
        return dict(pairs)

    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, destination) of each COPY from the build context (not --from another stage)."""
        found = []
        for args in self.args("COPY"):
            words = args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            found.append((paths[:-1], paths[-1]))
        return found


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name, in order; `${ARG}` in FROM resolved from the global ARG defaults."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            logical.append(pending)
            pending = ""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for entry in logical:
        instruction, _, args = entry.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and current is None:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif instruction == "FROM":
            base, _, name = args.partition(" AS ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], base.strip())
            current = stages[name.strip()] = Stage(name.strip(), base)
        else:
            assert current is not None, f"{instruction} before the first FROM"
            current.instructions.append((instruction, args.strip()))
    return stages


# ---- .dockerignore and the build context --------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax: `*` and `?` stay within a path segment, `**` crosses them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(root: Path = REPO) -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, excludes) in file order; `!pattern` re-includes."""
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/"))
        rules.append((_pattern_regex(pattern), not include))
    return rules


def in_context(relative: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether the file at this context-relative path is sent to the builder: the last rule that matches
    the path or one of its parent folders decides (Docker's rule)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, excludes in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = excludes
    return not excluded


def context_files(source: str, root: Path = REPO) -> list[str]:
    """The context-relative files a COPY of `source` sends to the builder (.dockerignore applied)."""
    rules = dockerignore_rules(root)
    path = root / source
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [rel for p in files if in_context(rel := p.relative_to(root).as_posix(), rules)]


def materialize_stage_context(stage: Stage, dest: Path, root: Path = REPO) -> Path:
    """Lay out under `dest` what the stage's COPY instructions put in its WORKDIR, as BuildKit would:
    a folder source copies its contents into the destination folder, a file source lands inside it."""
    for sources, target in stage.copies():
        assert not target.startswith("/"), (
            f"{stage.name}: expected WORKDIR-relative COPY targets, got {target}"
        )
        assert target.endswith("/"), f"{stage.name}: COPY target {target} should name a folder (end with /)"
        for source in sources:
            files = context_files(source, root)
            assert files, f"{stage.name}: COPY {source} sends nothing (missing, or excluded by .dockerignore)"
            for rel in files:
                inner = Path(rel).relative_to(source) if (root / source).is_dir() else Path(Path(rel).name)
                out = dest / target / inner
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, out)
    return dest


# ---- compose ------------------------------------------------------------------------------------------


def compose_file() -> dict:
    return yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())


def compose_env_defaults(environment: Mapping[str, str]) -> dict[str, str]:
    """A service's environment as compose resolves it with no variables set: `${X:-default}` -> default."""

    def resolve(value: str) -> str:
        return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))

    return {key: resolve(value) for key, value in environment.items()}
