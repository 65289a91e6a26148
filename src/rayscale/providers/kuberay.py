"""Worker nodes as pods of a RayCluster, acting only through the RayCluster CR.

Launching raises a group's ``replicas``; stopping a (drained) worker lists its
pod in ``scaleStrategy.workersToDelete`` and lowers ``replicas`` in the same
update. That is the contract KubeRay's operator and rayscale's both honour,
so this provider works with either. Updates carry the object's
resourceVersion (optimistic locking) and are retried on conflict, so they
never overwrite a concurrent change.

Replicas that no pod stands for yet are reported as launching nodes, so the
planner counts them and nothing is launched twice. A pod the scheduler cannot
place (``PodScheduled=False``, ``Unschedulable``) is reported dead before it
ever ran: the loop treats that as a failed launch, backs the group off and the
demand moves to the next group at once.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime
from typing import Any

from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from rayscale.labels import CLUSTER_LABEL, GROUP_LABEL_K8S, NODE_TYPE_LABEL, NODE_TYPE_WORKER
from rayscale.providers.base import ProviderNode, ProviderState
from rayscale.spec import ClusterSpec, parse_cluster_spec

RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
PENDING_PREFIX = "pending:"
_RETRIES = 8


class KubeRayProvider:
    def __init__(self, client: Client, name: str, namespace: str) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace

    # ------------------------------------------------------------ reading

    def cluster(self) -> dict[str, Any]:
        obj = self.client.get(RayCluster, self.name, namespace=self.namespace)
        return dict(obj.to_dict())  # type: ignore[no-untyped-call]

    def spec(self) -> ClusterSpec:
        return parse_cluster_spec(self.cluster())

    def _pods(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.client.list(
            Pod, namespace=self.namespace,
            labels={CLUSTER_LABEL: self.name, NODE_TYPE_LABEL: NODE_TYPE_WORKER},
        )]

    def nodes(self) -> list[ProviderNode]:
        cluster = self.cluster()
        groups = cluster.get("spec", {}).get("workerGroupSpecs") or []
        pods = self._pods()
        out: list[ProviderNode] = []
        for group in groups:
            name = group["groupName"]
            doomed = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
            members = [p for p in pods if _group_of(p) == name]
            counted = 0
            for pod in members:
                state = _state(pod, doomed)
                if state in ("launching", "started"):
                    counted += 1
                out.append(ProviderNode(
                    id=pod["metadata"]["name"], group=name, state=state,
                    launched_at=_epoch(pod["metadata"].get("creationTimestamp")),
                    ip=(pod.get("status") or {}).get("podIP"),
                ))
            missing = int(group.get("replicas") or 0) - counted
            out += [ProviderNode(f"{PENDING_PREFIX}{name}:{k}", name, "launching", time.time())
                    for k in range(max(0, missing))]
        return out

    # ------------------------------------------------------------- acting

    def launch(self, group: str, count: int) -> list[str]:
        def change(g: dict[str, Any]) -> None:
            g["replicas"] = int(g.get("replicas") or 0) + count

        self._update_group(group, change)
        return [f"{PENDING_PREFIX}{group}:+{k}" for k in range(count)]

    def terminate(self, node_id: str) -> None:
        if node_id.startswith(PENDING_PREFIX):
            group = node_id[len(PENDING_PREFIX):].split(":", 1)[0]

            def fewer(g: dict[str, Any]) -> None:
                g["replicas"] = max(0, int(g.get("replicas") or 0) - 1)

            self._update_group(group, fewer)
            return
        pod_groups = {p["metadata"]["name"]: _group_of(p) for p in self._pods()}
        pod_group = pod_groups.get(node_id)
        if pod_group is None:
            return  # already gone
        live = set(pod_groups)

        def delete(g: dict[str, Any]) -> None:
            strategy = g.setdefault("scaleStrategy", {})
            names = [n for n in (strategy.get("workersToDelete") or []) if n in live]
            if node_id not in names:
                names.append(node_id)
                g["replicas"] = max(0, int(g.get("replicas") or 0) - 1)
            strategy["workersToDelete"] = names

        self._update_group(pod_group, delete)

    def forget(self, node_id: str) -> None:
        """A dead or unschedulable pod: take it out of the desired count and delete it."""
        self.terminate(node_id)

    def _update_group(self, group: str, change: Any) -> None:
        for _ in range(_RETRIES):
            cluster = self.cluster()
            groups = copy.deepcopy(cluster["spec"].get("workerGroupSpecs") or [])
            target = next((g for g in groups if g["groupName"] == group), None)
            if target is None:
                raise KeyError(f"RayCluster {self.name} has no worker group {group!r}")
            change(target)
            patch = {
                "metadata": {"resourceVersion": cluster["metadata"]["resourceVersion"]},
                "spec": {"workerGroupSpecs": groups},
            }
            try:
                self.client.patch(RayCluster, self.name, patch, namespace=self.namespace,
                                  patch_type=PatchType.MERGE)
                return
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
        raise RuntimeError(f"could not update RayCluster {self.name}: too many conflicts")


def _group_of(pod: dict[str, Any]) -> str | None:
    labels: dict[str, str] = pod["metadata"].get("labels") or {}
    return labels.get(GROUP_LABEL_K8S)


def _state(pod: dict[str, Any], doomed: set[str]) -> ProviderState:
    meta, status = pod["metadata"], pod.get("status") or {}
    if meta.get("deletionTimestamp") or meta["name"] in doomed:
        return "stopping"
    phase = status.get("phase", "Pending")
    if phase in ("Failed", "Succeeded"):
        return "dead"
    if phase == "Running":
        return "started"
    for cond in status.get("conditions") or []:
        if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"):
            return "dead"
    return "launching"


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return time.time()
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return time.time()
