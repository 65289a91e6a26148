"""The chart's Prometheus Operator objects (deploy/helm/rayscale), rendered by helm.

No Prometheus Operator runs here (its CRDs are not installed), so the
ServiceMonitor and PodMonitor are checked as rendered: none by default; when
turned on, they select exactly the operator's metrics Service and the head
pods the operator makes, by the port names the Service and the sidecar
declare (the sidecar's from the operator's own pod builder), and relabel the
cluster's name to ``ray_io_cluster`` as the dashboards expect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rayscale.api import RayCluster
from rayscale.labels import AUTOSCALER_METRICS_PORT, AUTOSCALER_METRICS_PORT_NAME
from rayscale.operator.desired import PodSettings, head_pod
from rayscale.operator.handlers import SidecarSettings, _add_autoscaler_sidecar
from rayscale.spec import parse_cluster_spec
from tests.k8s.operator.test_helm_rbac import (
    HELM_BUILD_TIMEOUT_S,
    _helm,
    _helm_dir,
    _helm_ok,
    helm,
    render,
)

__all__ = ["helm"]  # the fixture, shared with test_helm_rbac

if not _helm_ok(_helm_dir() / "bin" / "helm"):  # the first test builds helm: allow for it
    pytestmark = pytest.mark.timeout(HELM_BUILD_TIMEOUT_S + 600)

CHART = Path(__file__).parent.parent.parent.parent / "deploy" / "helm" / "rayscale"
MONITORS = {"ServiceMonitor", "PodMonitor"}


def _kinds(docs: list[dict[str, Any]], kinds: set[str]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def test_no_monitor_by_default(helm: Path) -> None:
    assert _kinds(render(helm, "ops", "rayscale-system"), MONITORS) == []
    docs = render(helm, "ops", "rayscale-system", "metrics.serviceMonitor.enabled=false",
                  "metrics.podMonitor.enabled=false")
    assert _kinds(docs, MONITORS) == []


def test_service_monitor_selects_the_operators_metrics_service(helm: Path) -> None:
    docs = render(helm, "ops", "rayscale-system", "metrics.serviceMonitor.enabled=true",
                  "metrics.serviceMonitor.additionalLabels.release=prom",
                  "metrics.serviceMonitor.interval=15s")
    (monitor,) = _kinds(docs, {"ServiceMonitor"})
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "rayscale-system"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (service,) = [d for d in docs if d["kind"] == "Service"
                  and d["metadata"]["name"].endswith("-metrics")]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["rayscale-system"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    # the operator's own pods are not what it selects: only that Service
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}


def test_service_monitor_needs_the_service(helm: Path) -> None:
    out = _helm(helm, "template", "ops", str(CHART), "--set", "metrics.serviceMonitor.enabled=true",
                "--set", "metrics.service.enabled=false")
    assert out.returncode != 0 and "metrics.service.enabled" in out.stderr


def _head(sidecar_ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The head pod the operator makes for an autoscaling RayCluster, sidecar included."""
    doc = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "demo", "namespace": "team-a", "uid": "u1"},
        "spec": {"enableInTreeAutoscaling": True, "headGroupSpec": {
            "rayStartParams": {}, "template": {"spec": {"containers": [{
                "name": "ray-head", "image": "rayproject/ray:2.60.0",
                **({"ports": sidecar_ports} if sidecar_ports else {}),
                "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}]}}},
            "workerGroupSpecs": []},
    }
    spec: RayCluster = parse_cluster_spec(doc)
    pod = head_pod(spec, PodSettings())
    _add_autoscaler_sidecar(pod, spec, SidecarSettings(), 6379)
    return pod


def test_pod_monitor_scrapes_the_sidecar_of_the_operators_head_pods(helm: Path) -> None:
    docs = render(helm, "ops", "rayscale-system", "metrics.podMonitor.enabled=true",
                  "metrics.podMonitor.additionalLabels.release=prom")
    (monitor,) = _kinds(docs, {"PodMonitor"})
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    pod = _head()
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "autoscaler")
    assert sidecar["ports"] == [{"name": AUTOSCALER_METRICS_PORT_NAME,
                                 "containerPort": AUTOSCALER_METRICS_PORT, "protocol": "TCP"}]
    assert endpoint["port"] == AUTOSCALER_METRICS_PORT_NAME == "as-metrics"  # KubeRay's name
    command = sidecar["command"]
    assert command[command.index("--metrics-port") + 1] == str(AUTOSCALER_METRICS_PORT)
    assert endpoint["path"] == "/metrics"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["ray_io_cluster"]["sourceLabels"] == [
        "__meta_kubernetes_pod_label_ray_io_cluster"]
    assert pod["metadata"]["labels"]["ray.io/cluster"] == "demo"
    assert relabel["job"]["replacement"] == "rayscale-autoscaler"
    # worker pods are not selected
    assert selector["ray.io/node-type"] == "head"


def test_pod_monitor_namespaces_follow_watch_namespaces(helm: Path) -> None:
    docs = render(helm, "ops", "rayscale-system", "metrics.podMonitor.enabled=true",
                  "watchNamespaces={team-a,team-b}")
    (monitor,) = _kinds(docs, {"PodMonitor"})
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    docs = render(helm, "ops", "rayscale-system", "metrics.podMonitor.enabled=true",
                  "watchNamespaces={team-a}", "metrics.podMonitor.namespaces={team-c}")
    (monitor,) = _kinds(docs, {"PodMonitor"})
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-c"]}


def test_a_declared_as_metrics_port_is_reused_not_doubled() -> None:
    """KubeRay's samples declare as-metrics on the Ray container (for Ray's autoscaler,
    which rayscale's heads do not run): the sidecar serves on that number, unnamed."""
    pod = _head([{"name": "as-metrics", "containerPort": 44300}])
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "autoscaler")
    assert "ports" not in sidecar
    assert sidecar["command"][sidecar["command"].index("--metrics-port") + 1] == "44300"
    named = [p for c in pod["spec"]["containers"] for p in c.get("ports") or []
             if p.get("name") == "as-metrics"]
    assert len(named) == 1
