"""Join what the provider started with what Ray sees, into one view per node.

A launched node is ``pending`` until a Ray node carrying its label registers;
then it is ``running``; once Ray drains it or we stop it, ``terminating``.
The same view builds the planner's ClusterState and `rayscale status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rayscale.api import RayCluster
from rayscale.labels import EXTERNAL_GROUP, GROUP_LABEL, HEAD_GROUP, NODE_LABEL
from rayscale.observe.ray_state import Observation, RayNode
from rayscale.providers.base import ProviderNode

NodeStatus = Literal["running", "pending", "terminating"]


@dataclass(frozen=True)
class NodeView:
    id: str
    group: str
    status: NodeStatus
    pid: int | None = None
    ip: str | None = None
    ray_node_id: str | None = None
    idle_s: float = 0.0
    launched_at: float | None = None
    total: Mapping[str, float] | None = None
    available: Mapping[str, float] | None = None
    memory_used_fraction: float | None = None

    @property
    def scalable(self) -> bool:
        return self.group not in (HEAD_GROUP, EXTERNAL_GROUP)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total"] = dict(self.total or {})
        out["available"] = dict(self.available or {})
        return out


@dataclass(frozen=True)
class Snapshot:
    nodes: list[NodeView]
    observation: Observation

    def of_group(self, group: str) -> list[NodeView]:
        return [n for n in self.nodes if n.group == group]


def join(
    provider_nodes: list[ProviderNode],
    observation: Observation,
    head_ip: str,
    memory: Mapping[str, float] | None = None,
) -> Snapshot:
    """One NodeView per live node; provider nodes that died are left to the caller."""
    memory = memory or {}
    ray_by_id: dict[str, RayNode] = {}
    unlabelled: dict[str, RayNode] = {}
    for ray_node in observation.alive():
        node_id = ray_node.labels.get(NODE_LABEL)
        if node_id:
            ray_by_id[node_id] = ray_node
        else:
            unlabelled[ray_node.ip] = ray_node
    # Pods created by another operator (KubeRay) carry no rayscale label: their
    # Ray node is the one at the pod's IP.
    for p in provider_nodes:
        if p.id not in ray_by_id and p.ip and p.ip != head_ip and p.ip in unlabelled:
            ray_by_id[p.id] = unlabelled.pop(p.ip)
    views: list[NodeView] = []
    for ray_node in unlabelled.values():
        group = HEAD_GROUP if ray_node.ip == head_ip else EXTERNAL_GROUP
        views.append(_from_ray(ray_node.node_id, group, "running", ray_node, None, memory))
    known = set()
    for p in provider_nodes:
        if p.state == "dead":
            continue
        known.add(p.id)
        registered = ray_by_id.get(p.id)
        if registered is None:
            status: NodeStatus = "terminating" if p.state == "stopping" else "pending"
            views.append(NodeView(p.id, p.group, status, p.pid, p.ip, launched_at=p.launched_at))
            continue
        stopping = p.state == "stopping" or registered.status == "draining"
        views.append(_from_ray(
            p.id, p.group, "terminating" if stopping else "running", registered, p, memory
        ))
    for node_id, ray_node in ray_by_id.items():
        if node_id not in known:
            # labelled by a rayscale we no longer track: never ours to stop
            group = ray_node.labels.get(GROUP_LABEL, EXTERNAL_GROUP)
            views.append(_from_ray(node_id, f"{EXTERNAL_GROUP}:{group}", "running", ray_node,
                                   None, memory))
    return Snapshot(views, observation)


def _from_ray(
    node_id: str,
    group: str,
    status: NodeStatus,
    ray_node: RayNode,
    provider: ProviderNode | None,
    memory: Mapping[str, float],
) -> NodeView:
    return NodeView(
        id=node_id,
        group=group,
        status=status,
        pid=provider.pid if provider else None,
        ip=ray_node.ip,
        ray_node_id=ray_node.node_id,
        idle_s=ray_node.idle_s,
        launched_at=provider.launched_at if provider else None,
        total=ray_node.total,
        available=ray_node.available,
        memory_used_fraction=memory.get(ray_node.node_id),
    )


def cluster_state(
    spec: RayCluster, snapshot: Snapshot, not_launchable: set[str]
) -> dict[str, Any]:
    """The planner's ClusterState document (plan-format.md) for this moment."""
    groups = {
        g.group_name: {
            "resources": g.ray_resources,
            "min": g.min_replicas,
            "max": g.max_replicas,
            "idle_timeout_s": g.idle_timeout_seconds,
            "priority": g.priority,
            "launchable": g.group_name not in not_launchable,
            "memory_target_fraction": g.memory_target_fraction,
            "labels": g.pod_labels,
        }
        for g in spec.worker_groups
        if not g.suspend
    }
    nodes = []
    for view in snapshot.nodes:
        entry: dict[str, Any] = {"id": view.id, "group": view.group, "status": view.status}
        if view.status == "pending" and view.group not in groups:
            continue  # a suspended group's pending node: the loop stops it
        if view.total is not None:
            entry["total"] = dict(view.total)
            entry["available"] = dict(view.available or {})
            entry["idle_s"] = view.idle_s
        if view.memory_used_fraction is not None:
            entry["memory_used_fraction"] = view.memory_used_fraction
        nodes.append(entry)
    obs = snapshot.observation
    return {
        "groups": groups,
        "nodes": nodes,
        "demand": {
            "tasks": [{"resources": s.resources, "count": s.count} for s in obs.tasks],
            "gangs": [
                {"strategy": g.strategy, "bundles": g.bundles, "count": g.count}
                for g in obs.gangs
            ],
            "floor": [{"resources": s.resources, "count": s.count} for s in obs.floor],
        },
        "options": {
            "upscaling_mode": spec.upscaling_mode,
            "idle_timeout_s": spec.idle_timeout_s,
            "max_nodes": None,
        },
    }
