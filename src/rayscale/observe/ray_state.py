"""Read a live Ray cluster through its GCS: nodes, idle times, pending demand, floors.

One call to ``ray.autoscaler.v2.sdk.get_cluster_resource_state`` gives all of
it; :func:`observation` turns that reply into an :class:`Observation` whose
demand is already the planner's own types (:class:`~rayscale.planner.state.Shape`
and :class:`~rayscale.planner.state.Gang`), so the autoscaler hands it to the
planner as it is. This is the one place where identical shapes are merged: Ray
reports one entry per scheduling class, and many classes share a shape.

Amounts Ray reports are doubles from a protobuf map; only finite positive
ones are kept (a missing resource means 0 in plan-format.md), so every value
satisfies the planner's model by construction and building the models here
is the first and only check they get.

Ray is imported lazily so that modules depending on this one (the CLI) stay
light until they really talk to a cluster.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from rayscale.observe.gcs_report import (
    AutoscalingReport,
    NodeGroup,
    autoscaling_state,
    cluster_config,
)
from rayscale.planner.state import MAX_AMOUNT, Gang, GangStrategy, Shape

RayNodeStatus = Literal["running", "idle", "draining", "dead"]
_STATUS: dict[str, RayNodeStatus] = {
    "RUNNING": "running", "IDLE": "idle", "DRAINING": "draining", "DEAD": "dead",
}


@dataclass(frozen=True)
class RayNode:
    node_id: str  # hex
    ip: str
    status: RayNodeStatus
    idle_s: float
    total: dict[str, float]
    available: dict[str, float]
    labels: dict[str, str]


@dataclass(frozen=True)
class Observation:
    """One moment of a Ray cluster; demand with identical shapes merged."""

    nodes: list[RayNode]
    tasks: list[Shape] = field(default_factory=list)
    gangs: list[Gang] = field(default_factory=list)
    floor: list[Shape] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)
    #: Ray's ``cluster_resource_state_version`` of the reply (0: unknown).
    version: int = 0

    def alive(self) -> list[RayNode]:
        return [n for n in self.nodes if n.status != "dead"]


class RayObserver:
    """Observations of one Ray cluster, by its GCS address (``ip:port``)."""

    def __init__(self, gcs_address: str) -> None:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        self.gcs_address = gcs_address
        self.gcs = GcsClient(address=gcs_address)
        self._version = 0

    def observe(self) -> Observation:
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        return observation(get_cluster_resource_state(self.gcs))

    def report_cluster_config(self, groups: Iterable[NodeGroup]) -> None:
        """Publish the node groups as Ray's autoscaler does (``ReportClusterConfig``)."""
        self.gcs.report_cluster_config(cluster_config(groups).SerializeToString())

    def report_autoscaling_state(self, report: AutoscalingReport, observed: int) -> None:
        """Publish pending, failed and infeasible (``ReportAutoscalingState``).

        ``observed``: the cluster resource state version the report answers.
        The GCS keeps the report with the highest version; versions are
        wall-clock milliseconds, so a restarted autoscaler's reports are not
        taken for old ones.
        """
        self._version = max(self._version + 1, int(time.time() * 1000))
        message = autoscaling_state(report, self._version, observed)
        self.gcs.report_autoscaling_state(message.SerializeToString())

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]:
        """Ask the GCS to drain an idle node; Ray refuses if the node is busy."""
        from ray.core.generated import autoscaler_pb2

        reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION")
        deadline_ms = int((time.time() + deadline_s) * 1000)
        accepted, rejection = self.gcs.drain_node(node_id, reason, message, deadline_ms)
        return bool(accepted), str(rejection or "")


def observation(state: Any) -> Observation:
    """An Observation from a ``ClusterResourceState`` (Ray's ``autoscaler.proto``)."""
    from ray.core.generated import autoscaler_pb2

    names = autoscaler_pb2.NodeStatus.Name
    return Observation(
        nodes=[_node(n, _STATUS.get(names(n.status), "dead")) for n in state.node_states],
        tasks=_shapes(
            (_resources(r.request.resources_bundle), int(r.count))
            for r in state.pending_resource_requests
        ),
        gangs=_gangs(state.pending_gang_resource_requests),
        floor=_shapes(
            (_resources(r.request.resources_bundle), int(r.count))
            for c in state.cluster_resource_constraints
            for r in c.resource_requests
        ),
        version=int(state.cluster_resource_state_version),
    )


def _resources(bundle: Any) -> dict[str, float]:
    """A resource map without zero (= missing), negative or non-finite amounts.

    Amounts are at most the planner's MAX_AMOUNT, the most Ray's fixed point
    holds: only an overflow inside Ray could report more (a task asking for
    more than 9.2e14 CPUs), and no node can hold either.
    """
    return {k: min(v, MAX_AMOUNT) for k, v in bundle.items() if 0.0 < v < math.inf}  # NaN: False


def _node(n: Any, status: RayNodeStatus) -> RayNode:
    return RayNode(
        node_id=n.node_id.hex(),
        ip=n.node_ip_address,
        status=status,
        idle_s=n.idle_duration_ms / 1000.0 if status == "idle" else 0.0,
        total=_resources(n.total_resources),
        available=_resources(n.available_resources),
        labels={str(k): str(v) for k, v in n.labels.items()},
    )


def _shapes(shapes: Iterable[tuple[dict[str, float], int]]) -> list[Shape]:
    """Sum counts of identical shapes (Ray reports one entry per scheduling class)."""
    merged: dict[tuple[tuple[str, float], ...], int] = {}
    for resources, count in shapes:
        if count <= 0:
            continue
        key = tuple(sorted(resources.items()))
        merged[key] = merged.get(key, 0) + count
    return [Shape(resources=dict(k), count=c) for k, c in merged.items()]


def _gangs(requests: Iterable[Any]) -> list[Gang]:
    """One Gang per distinct (strategy, bundles); count = how many placement groups."""
    merged: dict[tuple[GangStrategy, tuple[tuple[tuple[str, float], ...], ...]], int] = {}
    for gang in requests:
        bundles = [_resources(r.resources_bundle) for r in gang.requests]
        if not bundles:
            continue
        key = (_strategy(gang), tuple(tuple(sorted(b.items())) for b in bundles))
        merged[key] = merged.get(key, 0) + 1
    return [
        Gang(strategy=strategy, bundles=[dict(b) for b in bundles], count=count)
        for (strategy, bundles), count in merged.items()
    ]


_STRATEGIES: tuple[GangStrategy, ...] = ("STRICT_SPREAD", "STRICT_PACK", "SPREAD", "PACK")


def _strategy(gang: Any) -> GangStrategy:
    """Ray encodes strict strategies as placement constraints on each bundle."""
    constraints = [c for r in gang.requests for c in r.placement_constraints]
    if any(c.HasField("anti_affinity") for c in constraints):
        return "STRICT_SPREAD"
    if any(c.HasField("affinity") for c in constraints):
        return "STRICT_PACK"
    details = str(gang.details)
    for name in _STRATEGIES:
        if name in details:
            return name
    return "PACK"
