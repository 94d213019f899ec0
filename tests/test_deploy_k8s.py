"""The Kubernetes manifests, rendered offline: valid against the Kubernetes schemas, and in agreement with
the service they deploy (its routes, port, settings, shutdown timing, metric names) and with the image."""

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy_support import (
    REPO,
    app_routes,
    dockerfile_stages,
    queue_metric,
    settings_from,
    unknown_settings,
    worst_shutdown_s,
)
from tests.kustomize_lite import KustomizeError, build

K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes these manifests support (autoscaling/v2 and policy/v1 are GA there) and the newest
# schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def render(overlay: str) -> dict[str, dict]:
    """The overlay's resources by kind (each kind occurs once)."""
    resources = build(K8S / "overlays" / overlay)
    kinds = [r["kind"] for r in resources]
    assert len(kinds) == len(set(kinds)), kinds
    return {r["kind"]: r for r in resources}


def kubectl_kustomize(folder: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_name(resources: list[dict]) -> list[dict]:
    return sorted(resources, key=lambda r: (r["kind"], r["metadata"]["name"]))


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rendered(overlay: str) -> dict[str, dict]:
    return render(overlay)


def container(rendered: dict[str, dict]) -> dict:
    (only,) = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def settings_of(rendered: dict[str, dict]):
    return settings_from(rendered["ConfigMap"]["data"])


def test_every_overlay_renders_the_full_set(rendered: dict[str, dict]) -> None:
    expected = {"ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert set(rendered) == expected | {"PodDisruptionBudget", "ServiceMonitor"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: no cross-check")
@pytest.mark.parametrize("folder", ["base", "overlays/cpu", "overlays/gpu"])
def test_in_repo_renderer_matches_kubectl_kustomize(folder: str) -> None:
    assert by_name(build(K8S / folder)) == by_name(kubectl_kustomize(K8S / folder))


def test_renderer_subset_behaves_like_kustomize(tmp_path: Path) -> None:
    """The renderer's rules on a small case: a patch's list items come first, in its order (what kubectl
    kustomize does), generator merge + hash rename, images by digest, and unsupported fields refused."""
    base, overlay = tmp_path / "base", tmp_path / "overlay"
    base.mkdir()
    overlay.mkdir()
    pod = {"containers": [{"name": "c", "image": "app:1", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}
    pod["volumes"] = [{"name": v, "emptyDir": {}} for v in ("a", "b", "z")]
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    deployment["spec"] = {"template": {"spec": pod}}
    (base / "d.yaml").write_text(yaml.safe_dump(deployment))
    generator = {"name": "cfg", "literals": ["A=1", "B=2"]}
    (base / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["d.yaml"], "configMapGenerator": [generator]})
    )
    volumes = [{"name": "c", "emptyDir": {}}, {"name": "b", "emptyDir": {"medium": "Memory"}}]
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    patch["spec"] = {"template": {"spec": {"volumes": volumes}}}
    (overlay / "p.yaml").write_text(yaml.safe_dump(patch))
    kustomization = {
        "resources": ["../base"],
        "configMapGenerator": [{"name": "cfg", "behavior": "merge", "literals": ["B=3"]}],
        "patches": [{"path": "p.yaml"}],
        "images": [{"name": "app", "newName": "registry.example.com/app", "digest": "sha256:" + "0" * 64}],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    rendered = {r["kind"]: r for r in build(overlay)}
    config_map = rendered["ConfigMap"]
    assert config_map["data"] == {"A": "1", "B": "3"}
    assert config_map["metadata"]["name"].startswith("cfg-") and len(config_map["metadata"]["name"]) == 14
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["c", "b", "a", "z"]
    assert spec["volumes"][1]["emptyDir"] == {"medium": "Memory"}
    (c,) = spec["containers"]
    assert c["image"] == "registry.example.com/app@sha256:" + "0" * 64
    assert c["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    if shutil.which("kubectl"):
        assert by_name(build(overlay)) == by_name(kubectl_kustomize(overlay))

    kustomization["namePrefix"] = "x-"
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    with pytest.raises(KustomizeError, match="namePrefix"):
        build(overlay)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_resources_valid_against_kubernetes_schemas(rendered: dict[str, dict], version: str) -> None:
    for kind, resource in rendered.items():
        if kind == "ServiceMonitor":  # a CRD, not in the Kubernetes schemas; checked field by field below
            continue
        kubernetes_validate.validate(resource, version, strict=True)  # raises on any unknown or bad field


def test_config_map_holds_valid_settings(overlay: str, rendered: dict[str, dict]) -> None:
    data = rendered["ConfigMap"]["data"]
    assert not unknown_settings(data)
    settings = settings_of(rendered)  # the service's own validation (types, ranges, queue >= batch)
    assert settings.host == "0.0.0.0", "the service must listen on the pod IP, not loopback"
    assert settings.backend == {"cpu": "onnxruntime", "gpu": "tensorrt"}[overlay]
    env_from = container(rendered)["envFrom"]
    assert {"configMapRef": {"name": rendered["ConfigMap"]["metadata"]["name"]}} in env_from


def test_probes_use_the_service_endpoints(rendered: dict[str, dict]) -> None:
    c = container(rendered)
    routes = app_routes()
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"  # ready = model loaded and warmed up
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # turns 503 as soon as draining starts
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"  # alive, not "ready": no restarts under load
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in routes
        assert ports[c[probe]["httpGet"]["port"]] == settings_of(rendered).port


def test_startup_probe_covers_the_model_load(overlay: str, rendered: dict[str, dict]) -> None:
    """At least as long as the image's own HEALTHCHECK start period (the TensorRT build on gpu)."""
    probe = container(rendered)["startupProbe"]
    budget = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    healthcheck = dockerfile_stages()[overlay].args("HEALTHCHECK")[0]
    start_period = int(healthcheck.split("--start-period=")[1].split("s")[0])
    assert budget >= start_period
    assert budget >= {"cpu": 120, "gpu": 600}[overlay]


def test_termination_grace_outlasts_the_drain(rendered: dict[str, dict]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    command = container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    settings = settings_of(rendered)
    assert pre_stop >= 5, "endpoint removal needs a few seconds to reach every proxy"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + worst_shutdown_s(settings) + 5
    assert settings.shutdown_timeout_s >= settings.request_timeout_s, (
        "in-flight requests may use their deadline"
    )


def test_autoscaling_follows_the_tile_queue(rendered: dict[str, dict]) -> None:
    hpa = rendered["HorizontalPodAutoscaler"]["spec"]
    deployment = rendered["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    by_type = {m["type"]: m for m in hpa["metrics"]}
    name, kind = queue_metric()
    assert kind == "gauge"
    pods = by_type["Pods"]["pods"]
    assert pods["metric"]["name"] == name
    assert pods["target"]["type"] == "AverageValue"
    target = float(pods["target"]["averageValue"])
    settings = settings_of(rendered)
    # Scale while there is a backlog, well before the queue is full and requests get 429.
    assert settings.max_batch_tiles <= target <= settings.max_queue_tiles / 4
    assert by_type["Resource"]["resource"]["name"] == "cpu"  # the fallback without the custom metric
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


def test_prometheus_adapter_serves_the_hpa_metric() -> None:
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    name, _ = queue_metric()
    assert rule["seriesQuery"].startswith(name + "{")
    assert rule["name"]["as"] == name
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]
    for overlay in OVERLAYS:
        metrics = render(overlay)["HorizontalPodAutoscaler"]["spec"]["metrics"]
        assert name in {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}


def test_resources_and_gpu_limits(overlay: str, rendered: dict[str, dict]) -> None:
    resources = container(rendered)["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]
    assert "nvidia.com/gpu" not in resources["requests"], "GPUs go in limits only"
    if overlay == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        tolerations = rendered["Deployment"]["spec"]["template"]["spec"]["tolerations"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        # ONNX Runtime sizes its thread pool by the node's cores unless told the container's share.
        assert settings_of(rendered).threads == int(resources["limits"]["cpu"])


def test_image_tag_names_the_dockerfile_target(overlay: str, rendered: dict[str, dict]) -> None:
    import rsd

    assert container(rendered)["image"] == f"rsd:{rsd.__version__}-{overlay}"
    assert overlay in dockerfile_stages()


def test_pod_is_hardened_and_writable_where_the_image_writes(overlay: str, rendered: dict[str, dict]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    c = container(rendered)
    stage = dockerfile_stages()[overlay]
    uid, gid = (int(x) for x in stage.args("USER")[-1].split(":"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid) != (0, 0)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = [Path(m["mountPath"]) for m in c["volumeMounts"]]
    writable = [Path("/tmp")]  # uploads are spooled there
    env = stage.env()
    writable += [Path(env[k]) for k in ("RSD_ENGINE_CACHE", "CUDA_CACHE_PATH") if k in env]
    for path in writable:
        assert any(path == m or m in path.parents for m in mounts), f"{path} is not on a writable volume"


def test_service_pdb_and_monitor_select_the_pods(rendered: dict[str, dict]) -> None:
    labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = rendered["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container(rendered)["ports"]}
    monitor = rendered["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics" and "/metrics" in app_routes()
