"""Which series the autoscaler and the operator export, read back from their registries.

Every series a dashboard panel shows must exist from the first scrape (at 0),
not from the first event; capped demand is the plan's ``capped``; the
operator keeps KubeRay's RayCluster series per cluster.
"""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry

from rayscale.autoscaler.metrics import (
    DEMAND_KINDS,
    HOLD_REASONS,
    NODE_STATES,
    TERMINATION_REASONS,
    AutoscalerMetrics,
)
from rayscale.autoscaler.snapshot import Snapshot
from rayscale.autoscaler.status import publish_gauges
from rayscale.observe.ray_state import Observation
from rayscale.operator.handlers import _cluster_metrics
from rayscale.operator.metrics import OperatorMetrics
from rayscale.planner import Plan
from rayscale.planner.plan import REASON_ORDER, Unplaced
from rayscale.planner.state import Shape
from rayscale.spec import parse_cluster_spec


def sample(registry: CollectorRegistry, name: str, /, **labels: str) -> float | None:
    return cast("float | None", registry.get_sample_value(name, labels))


def spec(*groups: str) -> Any:
    return parse_cluster_spec({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
        "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
            {"name": "ray-head", "resources": {"limits": {"cpu": "1"}}}]}}},
            "workerGroupSpecs": [{
                "groupName": g, "minReplicas": 0, "maxReplicas": 2, "rayStartParams": {},
                "template": {"spec": {"containers": [
                    {"name": "w", "resources": {"limits": {"cpu": "1"}}}]}}} for g in groups]},
    })


def test_every_known_series_exists_at_zero_before_anything_happened() -> None:
    m = AutoscalerMetrics()
    r = m.registry
    for kind in DEMAND_KINDS:
        for name in ("rayscale_pending_demand", "rayscale_infeasible_demand",
                     "rayscale_capped_demand"):
            assert sample(r, name, kind=kind) == 0, (name, kind)
    for reason in HOLD_REASONS:
        assert sample(r, "rayscale_held_rounds_total", reason=reason) == 0
    m.know_groups(["small", "big"])
    for group in ("small", "big"):
        for state in NODE_STATES:
            assert sample(r, "rayscale_nodes", group=group, state=state) == 0
        for reason in REASON_ORDER:
            assert sample(r, "rayscale_launches_total", group=group, reason=reason) == 0
        for reason in TERMINATION_REASONS:
            assert sample(r, "rayscale_terminations_total", group=group, reason=reason) == 0
        for name in ("rayscale_failed_launches_total", "rayscale_drain_rejections_total",
                     "rayscale_backoffs_total", "rayscale_group_backoff"):
            assert sample(r, name, group=group) == 0, name


def test_counts_survive_and_a_group_that_left_loses_its_gauges() -> None:
    m = AutoscalerMetrics()
    m.know_groups(["small", "big"])
    m.launches.labels("small", "tasks").inc(2)
    m.nodes.labels("small", "running").set(2)
    m.know_groups(["small", "big"])  # again: nothing reset
    assert sample(m.registry, "rayscale_launches_total", group="small", reason="tasks") == 2
    assert sample(m.registry, "rayscale_nodes", group="small", state="running") == 2
    m.know_groups(["big"])
    assert sample(m.registry, "rayscale_nodes", group="small", state="running") is None
    assert sample(m.registry, "rayscale_group_backoff", group="small") is None
    assert sample(m.registry, "rayscale_launches_total", group="small", reason="tasks") == 2


def test_capped_demand_is_the_plans_capped_part() -> None:
    m = AutoscalerMetrics()
    capped = Unplaced(tasks=[Shape(resources={"CPU": 1}, count=3),
                             Shape(resources={"GPU": 1}, count=2)])
    decision = Plan(capped=capped, infeasible=Unplaced(floor=[Shape(resources={"CPU": 99})]))
    publish_gauges(m, spec("small"), Snapshot([], Observation([])), decision, {"small"})
    assert sample(m.registry, "rayscale_capped_demand", kind="tasks") == 5
    assert sample(m.registry, "rayscale_capped_demand", kind="gangs") == 0
    assert sample(m.registry, "rayscale_infeasible_demand", kind="floor") == 1
    assert sample(m.registry, "rayscale_group_backoff", group="small") == 1
    assert sample(m.registry, "rayscale_failed_launches_total", group="small") == 0
    publish_gauges(m, spec("small"), Snapshot([], Observation([])), Plan(), set())
    assert sample(m.registry, "rayscale_capped_demand", kind="tasks") == 0


def cluster_body(name: str, conditions: list[dict[str, Any]] | None = None,
                 labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "creationTimestamp": "2026-11-28T12:00:00Z", "labels": labels or {}},
            "status": {"conditions": conditions or []}}


def provisioned(status: str, at: str = "2026-11-28T12:00:42Z") -> list[dict[str, Any]]:
    return [{"type": "HeadPodReady", "status": status, "lastTransitionTime": at},
            {"type": "RayClusterProvisioned", "status": status, "lastTransitionTime": at}]


def test_operator_rayclusters_as_kuberay_counts_them() -> None:
    m = OperatorMetrics()
    r = m.registry
    for state in ("ready", "provisioning", "suspended", "failed"):  # before any cluster
        assert sample(r, "rayscale_operator_clusters", state=state) == 0
    _cluster_metrics(m, cluster_body("a"), provisioned("False"))
    _cluster_metrics(m, cluster_body("b", labels={"ray.io/originated-from-crd": "RayJob"}),
                     provisioned("True"))
    a = {"name": "a", "namespace": "ns", "uid": "uid-a"}
    b = {"name": "b", "namespace": "ns", "uid": "uid-b"}
    assert sample(r, "rayscale_operator_cluster_info", owner_kind="None", **a) == 1
    assert sample(r, "rayscale_operator_cluster_info", owner_kind="RayJob", **b) == 1
    assert sample(r, "rayscale_operator_cluster_condition_provisioned", condition="false",
                  **a) == 1
    assert sample(r, "rayscale_operator_cluster_provisioned_duration_seconds", **a) is None
    assert sample(r, "rayscale_operator_cluster_provisioned_duration_seconds", **b) == 42
    # a provisioned: its condition series flips (one series per cluster), duration appears
    _cluster_metrics(m, cluster_body("a"), provisioned("True", "2026-11-28T12:01:00Z"))
    assert sample(r, "rayscale_operator_cluster_condition_provisioned", condition="false",
                  **a) is None
    assert sample(r, "rayscale_operator_cluster_condition_provisioned", condition="true",
                  **a) == 1
    assert sample(r, "rayscale_operator_cluster_provisioned_duration_seconds", **a) == 60
    m.forget_cluster("ns", "a")
    assert sample(r, "rayscale_operator_cluster_info", owner_kind="None", **a) is None
    assert sample(r, "rayscale_operator_cluster_condition_provisioned", condition="true",
                  **a) is None
    assert sample(r, "rayscale_operator_cluster_provisioned_duration_seconds", **a) is None
    assert sample(r, "rayscale_operator_cluster_info", owner_kind="RayJob", **b) == 1
    m.forget_cluster("ns", "a")  # twice: nothing left to remove
