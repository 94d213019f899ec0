"""The deployment docs and the Grafana dashboard name only metrics and settings the service really has."""

import json
import re

from service.settings import Settings
from tests.deploy_support import (
    REPO,
    exposed_metric_names,
    load_gpu_entrypoint,
    metric_families,
    queue_metric,
    unknown_settings,
)

DOCS = REPO / "docs" / "deployment.md"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\brsd_[a-z_]+\b")


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_every_metric_in_the_docs_exists() -> None:
    """Series names as /metrics shows them; a histogram may also be named by its family."""
    named = set(METRIC.findall(DOCS.read_text()))
    histograms = {name for name, kind in metric_families().items() if kind == "histogram"}
    assert len(named) >= 10, "the docs name the metrics"
    assert named <= exposed_metric_names() | histograms, named - exposed_metric_names() - histograms


def test_every_setting_in_the_docs_exists() -> None:
    named = set(re.findall(r"\bRSD_[A-Z_]+\b", DOCS.read_text()))
    assert not unknown_settings(dict.fromkeys(named, "")), unknown_settings(dict.fromkeys(named, ""))


def test_settings_table_shows_the_real_defaults() -> None:
    """Rows `| `RSD_X` | `default` | ... |` of the docs' settings table against service/settings.py."""
    rows = re.findall(r"^\| `RSD_([A-Z_]+)` \| `([^`]+)`", DOCS.read_text(), flags=re.MULTILINE)
    assert len(rows) >= 5
    defaults = {f"RSD_{name.upper()}": field.default for name, field in Settings.model_fields.items()}
    defaults[load_gpu_entrypoint().CACHE_ENV] = str(load_gpu_entrypoint().DEFAULT_CACHE)
    for name, shown in rows:
        default = defaults[f"RSD_{name}"]
        numeric = shown.replace(".", "", 1).isdigit() and float(shown) == default
        assert shown == str(default) or numeric, f"RSD_{name}: docs {shown}, code {default}"


def test_dashboard_queries_use_real_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 8
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= exposed_metric_names(), used - exposed_metric_names()
    assert queue_metric()[0] in used, "the dashboard shows the autoscaling signal"
    for expr in exprs:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_dashboard_panels_are_laid_out_and_unique() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
