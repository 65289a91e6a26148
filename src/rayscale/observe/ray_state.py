"""Read a live Ray cluster through its GCS: nodes, idle times, pending demand, floors.

One call to ``ray.autoscaler.v2.sdk.get_cluster_resource_state`` gives all of
it. Ray is imported lazily so that modules depending on this one (the CLI)
stay light until they really talk to a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

RayNodeStatus = Literal["running", "idle", "draining", "dead"]
_STATUS = {"RUNNING": "running", "IDLE": "idle", "DRAINING": "draining", "DEAD": "dead"}


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
class ShapeCount:
    resources: dict[str, float]
    count: int


@dataclass(frozen=True)
class GangDemand:
    strategy: str
    bundles: list[dict[str, float]]
    count: int = 1


@dataclass(frozen=True)
class Observation:
    nodes: list[RayNode]
    tasks: list[ShapeCount] = field(default_factory=list)
    gangs: list[GangDemand] = field(default_factory=list)
    floor: list[ShapeCount] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)

    def alive(self) -> list[RayNode]:
        return [n for n in self.nodes if n.status != "dead"]


class RayObserver:
    """Observations of one Ray cluster, by its GCS address (``ip:port``)."""

    def __init__(self, gcs_address: str) -> None:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        self.gcs_address = gcs_address
        self.gcs = GcsClient(address=gcs_address)

    def observe(self) -> Observation:
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        state = get_cluster_resource_state(self.gcs)
        return Observation(
            nodes=[_node(n) for n in state.node_states],
            tasks=_merge(
                (_resources(r.request.resources_bundle), int(r.count))
                for r in state.pending_resource_requests
            ),
            gangs=_gangs(state.pending_gang_resource_requests),
            floor=_merge(
                (_resources(r.request.resources_bundle), int(r.count))
                for c in state.cluster_resource_constraints
                for r in c.resource_requests
            ),
        )

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]:
        """Ask the GCS to drain an idle node; Ray refuses if the node is busy."""
        from ray.core.generated import autoscaler_pb2

        reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION")
        deadline_ms = int((time.time() + deadline_s) * 1000)
        accepted, rejection = self.gcs.drain_node(node_id, reason, message, deadline_ms)
        return bool(accepted), str(rejection or "")


def _resources(bundle: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(bundle).items() if v}


def _node(n: Any) -> RayNode:
    from ray.core.generated import autoscaler_pb2

    status = _STATUS.get(autoscaler_pb2.NodeStatus.Name(n.status), "dead")
    return RayNode(
        node_id=n.node_id.hex(),
        ip=n.node_ip_address,
        status=status,  # type: ignore[arg-type]
        idle_s=n.idle_duration_ms / 1000.0 if status == "idle" else 0.0,
        total=_resources(n.total_resources),
        available=_resources(n.available_resources),
        labels={str(k): str(v) for k, v in dict(n.labels).items()},
    )


def _merge(shapes: Iterable[tuple[dict[str, float], int]]) -> list[ShapeCount]:
    """Sum counts of identical shapes (Ray reports one entry per scheduling class)."""
    merged: dict[tuple[tuple[str, float], ...], int] = {}
    for resources, count in shapes:
        if count <= 0:
            continue
        key = tuple(sorted(resources.items()))
        merged[key] = merged.get(key, 0) + count
    return [ShapeCount(dict(k), c) for k, c in merged.items()]


def _gangs(requests: Iterable[Any]) -> list[GangDemand]:
    merged: dict[tuple[str, tuple[tuple[tuple[str, float], ...], ...]], int] = {}
    for gang in requests:
        bundles = [_resources(r.resources_bundle) for r in gang.requests]
        if not bundles:
            continue
        strategy = _strategy(gang)
        key = (strategy, tuple(tuple(sorted(b.items())) for b in bundles))
        merged[key] = merged.get(key, 0) + 1
    return [
        GangDemand(strategy, [dict(b) for b in bundles], count)
        for (strategy, bundles), count in merged.items()
    ]


def _strategy(gang: Any) -> str:
    """Ray encodes strict strategies as placement constraints on each bundle."""
    constraints = [c for r in gang.requests for c in r.placement_constraints]
    if any(c.HasField("anti_affinity") for c in constraints):
        return "STRICT_SPREAD"
    if any(c.HasField("affinity") for c in constraints):
        return "STRICT_PACK"
    details = str(gang.details)
    for name in ("STRICT_SPREAD", "STRICT_PACK", "SPREAD", "PACK"):
        if name in details:
            return name
    return "PACK"
