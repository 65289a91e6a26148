"""A real Prometheus scrapes the operator and the autoscaler sidecars on the dev cluster,
and every panel of both Grafana dashboards returns data.

The operator's /metrics is a static target. The sidecars are found as the
chart's PodMonitor finds them (Debian's Prometheus is built without
Kubernetes service discovery, and no Prometheus Operator runs here): head pods
with ``ray.io/node-type: head`` and ``app.kubernetes.io/created-by: rayscale``,
the container port named ``as-metrics``, ``ray_io_cluster`` from the pod label
``ray.io/cluster``, and ``job: rayscale-autoscaler``; the test writes what it
finds to a file_sd file. A RayCluster with the autoscaler runs, and a RayJob
runs to Complete; then every query of deploy/grafana/rayscale-operator.json
(``$namespace``: the test's) and of rayscale-autoscaler.json (``$cluster``: the
RayCluster) must return series.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, manifest, running
from tests.k8s.operator.test_helm_rbac import helm, render
from tests.k8s.operator.test_rayjob import create, jobs_ns, small_job, wait_deployment
from tests.promfix import Prometheus, panel_queries, prometheus_server

pytestmark = pytest.mark.e2e
__all__ = ["helm", "jobs_ns"]  # fixtures, shared with test_helm_rbac and test_rayjob

ROOT = Path(__file__).parent.parent.parent.parent
GRAFANA = ROOT / "deploy" / "grafana"


def pod_monitor_targets(kube: Client, namespace: str, podmonitor: dict[str, Any]
                        ) -> list[dict[str, Any]]:
    """The targets the chart's PodMonitor (rendered by helm) selects, as file_sd groups."""
    spec = podmonitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    source = relabel["ray_io_cluster"]["sourceLabels"][0]
    pod_label = {"__meta_kubernetes_pod_label_ray_io_cluster": "ray.io/cluster"}[source]
    groups = []
    for pod in kube.list(Pod, namespace=namespace, labels=spec["selector"]["matchLabels"]):
        if not (pod.status and pod.status.podIP and pod.metadata and pod.spec):
            continue
        ports = [p.containerPort for c in pod.spec.containers for p in c.ports or []
                 if p.name == endpoint["port"]]
        for port in ports:
            groups.append({"targets": [f"{pod.status.podIP}:{port}"], "labels": {
                "ray_io_cluster": (pod.metadata.labels or {})[pod_label],
                "job": relabel["job"]["replacement"]}})
    return groups


def _up(prom: Prometheus, job: str) -> int:
    return sum(1 for t in prom.targets()
               if t["labels"].get("job") == job and t["health"] == "up")


def _empty(prom: Prometheus, board: str, values: dict[str, str]) -> list[str]:
    queries = panel_queries(json.loads((GRAFANA / board).read_text()), values)
    return [f"{title} [{ref}]: {expr}" for title, ref, expr in queries
            if not prom.query_range(expr, seconds=60)]


def test_every_operator_and_autoscaler_panel_returns_data_on_kubernetes(
        kube: Client, jobs_ns: str, operator: Any, helm: Path, tmp_path: Path) -> None:
    ns = jobs_ns
    kube.create(RayCluster.from_dict(manifest("prom", replicas=0, autoscaling=True)),  # type: ignore[arg-type]
                namespace=ns)
    create(kube, ns, small_job("promjob", "python -c 'print(42)'"))
    podmonitor = next(d for d in render(helm, "ops", "rayscale-system",
                                        "metrics.podMonitor.enabled=true")
                      if d["kind"] == "PodMonitor")
    sd_file = tmp_path / "sd" / "sidecars.json"
    sd_file.parent.mkdir()
    sd_file.write_text("[]")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "rayscale-operator",
             "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}]},
            {"job_name": "sidecars", "file_sd_configs": [
                {"files": [str(sd_file)], "refresh_interval": "1s"}]},
        ],
    }
    try:
        with prometheus_server(tmp_path / "prometheus", yaml.safe_dump(config)) as prom:
            wait_for(lambda: running(kube, ns, "prom", "head") == 1
                     and (kube.get(RayCluster, "prom", namespace=ns).get("status") or {}).get(
                         "state") == "ready", 180, "the RayCluster ready")
            found = sd_file.with_suffix(".tmp")
            found.write_text(json.dumps(pod_monitor_targets(kube, ns, podmonitor)))
            found.replace(sd_file)  # Prometheus reads it whole
            wait_deployment(kube, ns, "promjob", "Complete")
            wait_for(lambda: _up(prom, "rayscale-operator") == 1
                     and _up(prom, "rayscale-autoscaler") >= 1, 60,
                     "Prometheus scraping the operator and the sidecar")
            sidecars = [t for t in prom.targets()
                        if t["labels"].get("job") == "rayscale-autoscaler"]
            assert {t["labels"].get("ray_io_cluster") for t in sidecars} >= {"prom"}
            assert all(t["scrapeUrl"].endswith(":44217/metrics") for t in sidecars)
            wait_for(lambda: prom.query(
                f'rayscale_operator_cluster_provisioned_duration_seconds{{namespace="{ns}"}}')
                and prom.query(f'rayscale_operator_job_execution_duration_seconds'
                               f'{{namespace="{ns}"}}')
                and prom.query('rayscale_nodes{ray_io_cluster="prom"}'), 30,
                "the RayCluster's, the RayJob's and the sidecar's series in Prometheus")
            time.sleep(4)  # a few more scrapes: every rate() window holds 2+ samples
            empty = _empty(prom, "rayscale-operator.json", {"namespace": ns, "cluster": ".*"})
            empty += _empty(prom, "rayscale-autoscaler.json", {"cluster": "prom", "group": ".*"})
            assert not empty, "panels without data:\n" + "\n".join(empty)
            assert ns in prom.label_values("namespace", "rayscale_operator_cluster_info")
            assert "prom" in prom.label_values("ray_io_cluster", "rayscale_nodes")
    finally:  # before jobs_ns's check that every pod of the namespace is gone
        kube.delete(RayCluster, "prom", namespace=ns)
