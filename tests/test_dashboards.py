"""The Grafana dashboards in deploy/grafana, checked without Grafana.

Grafana is not in Debian, so this checks the structure Grafana's classic
dashboard model needs to import a dashboard (uid, title, schemaVersion,
panels on a 24-column grid, templating), that every panel and query uses the
dashboard's Prometheus data source variable, that every variable an
expression uses is defined, and, against the code's own registries, that
every metric a query names exists, with the labels it selects by, and is
used the way its type allows (counters in rate/increase, histograms through
their buckets in histogram_quantile, gauges never in rate). Each exported
metric appears in a dashboard. Whether each query returns data from a real
Prometheus is tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.operator.metrics import OperatorMetrics

GRAFANA = Path(__file__).parent.parent / "deploy" / "grafana"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "state-timeline", "row"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
#: labels a target gets from where it is scraped, not from the metric: local mode's file_sd
#: file and the Helm chart's monitors set them (local/scrape.py, podmonitor.yaml)
TARGET_LABELS = {"ray_io_cluster", "job", "instance", "rayscale_mode"}
GRID_COLUMNS = 24

REQUIRED_PANELS = {
    "rayscale-autoscaler.json": {
        "Nodes by group and state", "Pending demand", "Infeasible demand",
        "Capped demand (maxReplicas, maxNodes, quota)", "Groups held back by a limit",
        "Launches by group and reason",
        "Terminations by group and reason", "Failed launches", "Groups backing off",
        "Backoffs started", "Planner latency", "Round latency", "GCS and provider reachable",
    },
    "rayscale-operator.json": {
        "Reconciles", "Reconcile errors", "RayClusters by state",
        "RayJobs by deployment status", "RayJob execution durations",
        "RayClusters provisioned", "Time to provisioned",
    },
}
REGISTRY_OF = {"rayscale-autoscaler.json": "autoscaler", "rayscale-operator.json": "operator"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / name).read_text())
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in (collapsed) rows included."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets") or []]


class Metric:
    def __init__(self, wrapper: MetricWrapperBase) -> None:
        self.name: str = wrapper._name
        self.type: str = wrapper._type
        self.labels: set[str] = set(wrapper._labelnames)

    def series(self) -> dict[str, str]:
        """Names of the series it exports: how a query may name it."""
        if self.type == "counter":
            return {f"{self.name}_total": "counter"}
        if self.type == "histogram":
            return {f"{self.name}_{s}": s for s in ("bucket", "sum", "count")}
        return {self.name: self.type}


def registry_metrics(owner: object) -> dict[str, Metric]:
    """Every metric an AutoscalerMetrics/OperatorMetrics defines, by exported series name."""
    out: dict[str, Metric] = {}
    for value in vars(owner).values():
        if isinstance(value, MetricWrapperBase):
            metric = Metric(value)
            for series in metric.series():
                out[series] = metric
    return out


REGISTRIES = {"autoscaler": registry_metrics(AutoscalerMetrics()),
              "operator": registry_metrics(OperatorMetrics())}
NAME = re.compile(r"\b(rayscale_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(rayscale_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@pytest.fixture(params=sorted(REQUIRED_PANELS))
def dashboard(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load(request.param)


def test_the_dashboard_model_grafana_imports(dashboard: tuple[str, dict[str, Any]]) -> None:
    name, board = dashboard
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]), board["uid"]
    assert board["uid"] == name.removesuffix(".json")
    assert board["title"]
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert isinstance(board["version"], int)
    assert board["time"]["from"] and board["time"]["to"]
    assert isinstance(board["panels"], list) and board["panels"]
    assert isinstance(board["templating"]["list"], list)
    assert isinstance(board["annotations"]["list"], list)
    assert "id" not in board or board["id"] is None  # Grafana assigns it on import


def test_one_prometheus_datasource_variable_used_everywhere(
        dashboard: tuple[str, dict[str, Any]]) -> None:
    _, board = dashboard
    sources = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert len(sources) == 1
    assert sources[0]["name"] == "datasource" and sources[0]["query"] == "prometheus"
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_on_the_grid(dashboard: tuple[str, dict[str, Any]]) -> None:
    _, board = dashboard
    every = panels(board)
    ids = [p["id"] for p in every]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"]
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            assert "targets" not in panel or not panel["targets"]
            continue
        targets = panel["targets"]
        assert targets, panel["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in targets), panel["title"]


def test_required_panels(dashboard: tuple[str, dict[str, Any]]) -> None:
    name, board = dashboard
    titles = {p["title"] for p in panels(board)}
    assert REQUIRED_PANELS[name] <= titles, REQUIRED_PANELS[name] - titles


def test_variables_are_defined(dashboard: tuple[str, dict[str, Any]]) -> None:
    _, board = dashboard
    defined = {v["name"] for v in board["templating"]["list"]}
    exprs = [e for _, e in queries(board)]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    for expr in exprs:
        for braced, bare in VARIABLE.findall(expr):
            used = braced or bare
            assert used in defined | BUILTIN_VARIABLES, f"${used} in {expr}"
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            # "All" must match every value, and series without the label (a Prometheus
            # whose targets do not set ray_io_cluster): ".*" does, ".+" would not
            assert variable["includeAll"] and variable["allValue"] == ".*", variable["name"]


def test_every_metric_exists_with_its_labels_and_is_used_by_its_type(
        dashboard: tuple[str, dict[str, Any]]) -> None:
    name, board = dashboard
    known = REGISTRIES[REGISTRY_OF[name]]
    exprs = list(queries(board))
    exprs += [("variable " + v["name"], v["query"]["query"])
              for v in board["templating"]["list"] if v["type"] == "query"]
    for title, expr in exprs:
        used = NAME.findall(expr)
        assert used, f"{title}: no rayscale metric in {expr}"
        for series in used:
            assert series in known, f"{title}: {series} is not exported (a renamed metric?)"
            metric = known[series]
            before = expr[:expr.index(series)].rstrip()
            wrapped = re.search(r"\b(rate|increase|irate)\($", before) is not None
            if series.endswith("_total"):
                assert wrapped, f"{title}: counter {series} outside rate()/increase()"
            elif metric.type == "histogram":
                assert series.endswith("_bucket") and wrapped and "histogram_quantile(" in expr, (
                    f"{title}: histogram {series}: use histogram_quantile over its buckets")
            else:
                assert not wrapped, f"{title}: gauge {series} inside rate()/increase()"
        for series, matchers in SELECTOR.findall(expr):
            allowed = known[series].labels | TARGET_LABELS | {"le"}
            for label, _ in MATCHER.findall(matchers):
                assert label in allowed, f"{title}: {series} has no label {label}"
        labels = set().union(*(known[s].labels for s in used)) | TARGET_LABELS | {"le"}
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in grouping.split(","))):
                assert label in labels, f"{title}: no label {label} to group by in {expr}"


def test_each_exported_metric_is_on_a_dashboard() -> None:
    for name, registry in REGISTRY_OF.items():
        used = {s for _, e in queries(load(name)) for s in NAME.findall(e)}
        metrics = {m.name for m in REGISTRIES[registry].values()}
        shown = {REGISTRIES[registry][s].name for s in used}
        assert metrics == shown, f"{name} does not show {sorted(metrics - shown)}"
