"""Join what the provider started with what Ray sees, into one view per node.

A launched node is ``pending`` until a Ray node carrying its label registers;
then it is ``running``; once Ray drains it or we stop it, ``terminating``.

A :class:`NodeView` *is* the planner's :class:`~rayscale.planner.state.Node`
plus where the node runs (pid, ip, Ray node id, launch time), so the round
hands the views to the planner as they are: :func:`cluster_state` builds the
planner's typed ClusterState directly from the spec and the snapshot, with no
JSON document in between. `rayscale plan` still parses documents
(:func:`rayscale.planner.parse_state`); here every value already holds the
model's rules by construction: the spec was validated when loaded, Ray's
amounts are finite and positive (observe/ray_state.py), node ids are unique
(one view per provider node or unlabelled Ray node) and pending nodes belong
to a scalable group (a suspended group's pending nodes are left out). The
models' own field checks still run when a view is built (pydantic does that
in compiled code, and it measured faster than ``model_construct``); nested
models are passed through, not validated again.

Labels, for the planner's label selectors: a group's are the Ray labels each of
its nodes will get (:attr:`~rayscale.api.WorkerGroupSpec.ray_labels`: the
group's ``labels`` and Ray's ``ray.io/node-group``), not its pods' labels; a
node Ray knows has the labels Ray reports for it (``ray.io/node-id`` and its
own ``rayscale.io/node`` included); a pending node has its group's.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from rayscale.api import RayCluster
from rayscale.labels import (
    EXTERNAL_GROUP,
    GROUP_LABEL,
    HEAD_GROUP,
    NODE_LABEL,
    UNBOUNDED_REPLICAS,
)
from rayscale.observe.ray_state import Observation, RayNode
from rayscale.planner.selectors import key_error
from rayscale.planner.state import ClusterState, Demand, Group, Node, NodeStatus, Options
from rayscale.providers.base import ProviderNode, QuotaView


class NodeView(Node):
    """A node as the planner sees it (the Node fields) and where it runs."""

    pid: int | None = None
    ip: str | None = None
    ray_node_id: str | None = None
    launched_at: float | None = None

    @property
    def scalable(self) -> bool:
        return self.group not in (HEAD_GROUP, EXTERNAL_GROUP)

    def to_dict(self) -> dict[str, Any]:
        """The node as `rayscale status --json` shows it."""
        return {
            "id": self.id,
            "group": self.group,
            "status": self.status,
            "pid": self.pid,
            "ip": self.ip,
            "ray_node_id": self.ray_node_id,
            "idle_s": self.idle_s or 0.0,
            "launched_at": self.launched_at,
            "total": dict(self.total or {}),
            "available": dict(self.available or {}),
            "memory_used_fraction": self.memory_used_fraction,
        }


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
    gone: Collection[str] = (),
) -> Snapshot:
    """One NodeView per live node; provider nodes that died are left to the caller.

    ``gone``: our node ids whose process is known to have exited. Ray's GCS
    keeps such a node ALIVE until its health checks fail (15 s or more); it is
    not shown, counted or planned with meanwhile.
    """
    memory = memory or {}
    ray_by_id: dict[str, RayNode] = {}
    unlabelled: dict[str, RayNode] = {}
    for ray_node in observation.alive():
        node_id = ray_node.labels.get(NODE_LABEL)
        if node_id in gone:
            continue
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
            views.append(NodeView(id=p.id, group=p.group, status=status, pid=p.pid, ip=p.ip,
                                  launched_at=p.launched_at))
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
        labels=_labels(ray_node.labels),
    )


def _labels(labels: dict[str, str]) -> dict[str, str]:
    """A node's Ray labels for the planner. A key outside the label syntax (Ray checks
    it with the same rules, so none is expected) is one no selector can name: left out."""
    if all(map(_valid_key, labels)):
        return labels
    return {k: v for k, v in labels.items() if _valid_key(k)}


@functools.lru_cache(maxsize=4096)
def _valid_key(key: str) -> bool:
    # every node repeats the same few keys: checked once each, not once per node and round
    return key_error(key) is None


def cluster_state(spec: RayCluster, snapshot: Snapshot, not_launchable: set[str],
                  quotas: QuotaView | None = None) -> ClusterState:
    """The planner's ClusterState (plan-format.md) for this moment, typed."""
    costs = quotas.costs if quotas is not None else {}
    groups = {
        g.group_name: Group(
            resources=g.ray_resources,
            min=g.min_replicas,
            max=None if g.max_replicas >= UNBOUNDED_REPLICAS else g.max_replicas,
            idle_timeout_s=g.idle_timeout_seconds,
            priority=g.priority,
            launchable=g.group_name not in not_launchable,
            memory_target_fraction=g.memory_target_fraction,
            labels=g.ray_labels,
            cost=costs.get(g.group_name, {}),
        )
        for g in spec.worker_groups
        if not g.suspend
    }
    # a suspended group's pending node is left out: the loop stops it
    nodes: list[Node] = [v for v in snapshot.nodes if v.status != "pending" or v.group in groups]
    obs = snapshot.observation
    return ClusterState(
        groups=groups,
        nodes=nodes,
        demand=Demand(tasks=obs.tasks, gangs=obs.gangs, floor=obs.floor),
        options=Options(
            upscaling_mode=spec.upscaling_mode,
            idle_timeout_s=spec.idle_timeout_s,
            max_nodes=None,
        ),
        quotas=quotas.quotas if quotas is not None else [],
    )
