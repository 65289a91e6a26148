"""What an autoscaler tells Ray's GCS, as Ray's own autoscaler v2 tells it.

Ray's libraries and tools read two things that an autoscaler reports to the
GCS (Ray's ``autoscaler.proto``):

- the **cluster config** (``ReportClusterConfig``): every node group with the
  resources of one node and its min and max count. Ray keeps it in the GCS's
  key-value store, where ``ray._private.state.state.get_cluster_config()``
  finds it: Ray Data asks it whether the cluster can grow and which node
  shapes exist, Ray Train whether a worker group could ever fit.
- the **autoscaling state** (``ReportAutoscalingState``): the launches not yet
  served, the nodes starting, the launches that failed and why, and the
  demand no group can ever hold. ``ray status`` and Ray's dashboard show it
  (``ray.autoscaler.v2.sdk.get_cluster_status``), and the GCS warns drivers
  once infeasible requests appear.

This module turns rayscale's own view (typed values the loop builds from its
spec, snapshot and plan) into those two messages, the messages Ray defines,
built with Ray's generated protobuf classes and sent by Ray's ``GcsClient``
(:class:`rayscale.observe.ray_state.RayObserver`). Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayscale.planner.plan import Unplaced
from rayscale.planner.selectors import parse_selector
from rayscale.planner.state import LabelSelector, Shape

#: A node group's ``max_count`` when it has no upper bound (Ray's convention).
UNBOUNDED_COUNT = -1
_INT32_MAX = 2**31 - 1
#: Infeasible requests reported one by one (as Ray does), at most this many of each kind.
MAX_INFEASIBLE_ENTRIES = 1000


@dataclass(frozen=True)
class NodeGroup:
    """One node type of the cluster config: a node's resources, min and max (None: no bound)."""

    name: str
    resources: Mapping[str, float]
    min: int
    max: int | None


@dataclass(frozen=True)
class PendingNode:
    """A launched node that has not registered with Ray yet.

    Without an address it is still a request (the provider has not made the
    node: a pod not yet created); with one, the node is starting Ray.
    """

    id: str
    group: str
    ip: str | None
    launched_at: float | None
    details: str = "starting ray"


@dataclass(frozen=True)
class FailedLaunch:
    group: str
    node_id: str
    reason: str
    launched_at: float | None
    failed_at: float


@dataclass(frozen=True)
class AutoscalingReport:
    """One round's autoscaling state, in rayscale's terms."""

    pending: tuple[PendingNode, ...] = ()
    failed: tuple[FailedLaunch, ...] = ()
    infeasible: Unplaced = field(default_factory=Unplaced)


def cluster_config(groups: Iterable[NodeGroup]) -> Any:
    """Ray's ``ClusterConfig`` message for these node groups."""
    from ray.core.generated import autoscaler_pb2 as pb

    config = pb.ClusterConfig()
    for group in groups:
        entry = config.node_group_configs.add(
            name=group.name,
            min_count=max(0, min(group.min, _INT32_MAX)),
            max_count=UNBOUNDED_COUNT if group.max is None else max(0, min(group.max, _INT32_MAX)),
        )
        entry.resources.update(_whole(group.resources))
    return config


def _whole(resources: Mapping[str, float]) -> dict[str, int]:
    """Ray's node group resources are whole numbers: floor, but a positive amount stays >= 1.

    Per-node marker resources (``node:<ip>``) are no part of a group's shape.
    """
    out = {}
    for name, amount in resources.items():
        if name.startswith("node:") or not 0 < amount < math.inf:
            continue
        out[name] = max(1, math.floor(amount))
    return out


def autoscaling_state(
    report: AutoscalingReport, version: int, cluster_resource_state_version: int
) -> Any:
    """Ray's ``AutoscalingState`` message; ``version`` must grow from report to report."""
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.AutoscalingState(
        autoscaler_state_version=version,
        last_seen_cluster_resource_state_version=cluster_resource_state_version,
    )
    for node in report.pending:
        if node.ip is None:
            # one request per node: `ray status` counts requests ("w, 2 launching")
            state.pending_instance_requests.add(
                instance_type_name=node.group, ray_node_type_name=node.group, count=1,
                request_ts=int(node.launched_at or 0),
            )
        else:
            state.pending_instances.add(
                instance_type_name=node.group, ray_node_type_name=node.group,
                instance_id=node.id, ip_address=node.ip, details=node.details,
            )
    for failure in report.failed:
        state.failed_instance_requests.add(
            instance_type_name=failure.group, ray_node_type_name=failure.group, count=1,
            reason=f"node {failure.node_id}: {failure.reason}",
            start_ts=int(failure.launched_at or failure.failed_at),
            failed_ts=int(failure.failed_at),
        )
    infeasible = report.infeasible
    entries = 0
    for shape in infeasible.tasks:
        for _ in range(shape.count):
            if entries >= MAX_INFEASIBLE_ENTRIES:
                break
            request = state.infeasible_resource_requests.add()
            request.resources_bundle.update(shape.resources)
            _add_selectors(request, _shape_selectors(shape))
            entries += 1
    entries = 0
    for gang in infeasible.gangs:
        for _ in range(gang.count):
            if entries >= MAX_INFEASIBLE_ENTRIES:
                break
            request = state.infeasible_gang_resource_requests.add(details=gang.strategy)
            selectors = gang.bundle_label_selector or [{} for _ in gang.bundles]
            for bundle, selector in zip(gang.bundles, selectors, strict=True):
                one = request.requests.add()
                one.resources_bundle.update(bundle)
                _add_selectors(one, [selector] if selector else [])
            entries += 1
    if infeasible.floor:
        constraint = state.infeasible_cluster_resource_constraints.add()
        for shape in infeasible.floor:
            request = constraint.resource_requests.add(count=shape.count).request
            request.resources_bundle.update(shape.resources)
            _add_selectors(request, _shape_selectors(shape))
    return state


def _shape_selectors(shape: Shape) -> list[LabelSelector]:
    if not shape.label_selector:
        return []
    return [shape.label_selector, *(f.label_selector for f in shape.fallback_strategy)]


def _add_selectors(request: Any, selectors: list[LabelSelector]) -> None:
    """A ``ResourceRequest``'s ``label_selectors`` as Ray writes them (IN / NOT_IN)."""
    from ray.core.generated import common_pb2

    ops = common_pb2.LabelSelectorOperator
    for selector in selectors:
        message = request.label_selectors.add()
        for condition in parse_selector(selector):
            message.label_constraints.add(
                label_key=condition.key,
                operator=ops.LABEL_OPERATOR_NOT_IN if condition.negated
                else ops.LABEL_OPERATOR_IN,
                label_values=sorted(condition.values),
            )
