"""The reconcile decision: observed pods of a RayCluster -> what to create and delete.

Pure: the kopf handlers observe and act; this module only decides, so every
rule is tested without an API server:

- one head pod; a failed or deleted head is replaced (with GCS fault tolerance
  the workers are kept: their raylets reconnect to the new head);
- per group, ``replicas`` clamped into [minReplicas, maxReplicas] worker pods
  (0 when the group or the cluster is suspended);
- pods named in ``scaleStrategy.workersToDelete`` are deleted;
- failed (or finished) worker pods are deleted and replaced;
- with in-tree autoscaling on, the operator never picks pods to delete by
  itself: only the autoscaler does, by name; it says so in an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from rayscale.api import RayCluster
from rayscale.labels import GROUP_LABEL_K8S, HEAD_GROUP
from rayscale.operator import gcs_ft
from rayscale.operator.desired import (
    PodSettings,
    head_pod,
    head_service_name,
    worker_pod,
)

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class ObservedPod:
    name: str
    group: str  # HEAD_GROUP for the head
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    ready: bool = False
    deleting: bool = False
    pod_ip: str | None = None
    created: str = ""

    @classmethod
    def from_pod(cls, pod: dict[str, Any]) -> ObservedPod:
        meta, status = pod.get("metadata", {}), pod.get("status", {}) or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return cls(
            name=meta["name"],
            group=(meta.get("labels") or {}).get(GROUP_LABEL_K8S, ""),
            phase=status.get("phase", "Pending"),
            ready=ready,
            deleting=meta.get("deletionTimestamp") is not None,
            pod_ip=status.get("podIP"),
            created=str(meta.get("creationTimestamp") or ""),
        )

    @property
    def finished(self) -> bool:
        return self.phase in ("Failed", "Succeeded")


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass
class Actions:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def desired_replicas(spec: RayCluster) -> dict[str, int]:
    if spec.spec.suspend:
        return {g.group_name: 0 for g in spec.worker_groups}
    return {g.group_name: 0 if g.suspend else g.desired_replicas for g in spec.worker_groups}


def reconcile(
    spec: RayCluster,
    pods: list[ObservedPod],
    settings: PodSettings,
) -> Actions:
    actions = Actions()
    live = [p for p in pods if not p.deleting]
    if spec.spec.suspend:
        actions.delete = [p.name for p in live]
        actions.status = _status(spec, pods, "suspended")
        return actions

    heads = [p for p in live if p.group == HEAD_GROUP]
    for head in heads:
        if head.finished:
            actions.delete.append(head.name)
            actions.events.append(Event("Warning", "HeadPodFailed",
                                        f"head pod {head.name} {head.phase.lower()}; replacing"))
    if not [h for h in heads if not h.finished]:
        actions.create.append(head_pod(spec, settings))
        actions.events += _head_replacement_events(spec, live)

    wanted = desired_replicas(spec)
    for group in spec.worker_groups:
        raw = group.replicas
        if raw is not None and raw != group.desired_replicas:
            actions.events.append(Event(
                "Warning", "ReplicasOutOfBounds",
                f"group {group.group_name}: replicas {raw} is outside [{group.min_replicas}, "
                f"{group.max_replicas}]; using {group.desired_replicas}",
            ))
        members = [p for p in live if p.group == group.group_name]
        keep = []
        named = set(group.scale_strategy.workers_to_delete)
        for pod in members:
            if pod.name in named:
                actions.delete.append(pod.name)
                actions.events.append(Event("Normal", "DeletedWorker",
                                            f"deleted {pod.name}: listed in workersToDelete"))
            elif pod.finished:
                actions.delete.append(pod.name)
                actions.events.append(Event("Warning", "ReplacingFailedWorker",
                                            f"worker {pod.name} {pod.phase.lower()}; replacing"))
            else:
                keep.append(pod)
        diff = wanted[group.group_name] - len(keep)
        if diff > 0:
            actions.create += [worker_pod(spec, group, settings) for _ in range(diff)]
            actions.events.append(Event("Normal", "CreatedWorkers",
                                        f"creating {diff} {group.group_name} worker pod(s)"))
        elif diff < 0 and spec.spec.enable_in_tree_autoscaling:
            actions.events.append(Event(
                "Warning", "WaitingForWorkersToDelete",
                f"group {group.group_name} has {-diff} worker(s) above replicas; "
                "with autoscaling on, "
                "only pods named in workersToDelete are deleted",
            ))
        elif diff < 0:
            # pods not running yet go first, then the newest
            victims = sorted(keep, key=lambda p: (p.phase == "Running", -_epoch(p.created)))
            victims = victims[:-diff]
            actions.delete += [p.name for p in victims]
            actions.events.append(Event("Normal", "DeletedWorkers",
                                        f"deleting {-diff} {group.group_name} worker pod(s)"))
    actions.status = _status(spec, pods, None)
    return actions


def head_ready(pods: list[ObservedPod]) -> bool:
    """The head pod is Running and Ready (its probes passed: Ray answers), as KubeRay's
    ``HeadPodReady`` reads the pod's ``Ready`` condition."""
    return any(p.group == HEAD_GROUP and not p.deleting and p.phase == "Running" and p.ready
               for p in pods)


def conditions(
    status: dict[str, Any], suspended: bool, previous: list[dict[str, Any]], now: str,
    head_is_ready: bool,
) -> list[dict[str, Any]]:
    """KubeRay's conditions; a condition keeps its transition time while it holds."""
    before = {c.get("type"): c for c in previous}
    head_ready = head_is_ready and status.get("state") != "suspended"
    provisioned = status.get("state") == "ready" or (
        before.get("RayClusterProvisioned", {}).get("status") == "True"  # never flips back
    )
    wanted = [
        ("HeadPodReady", head_ready, "HeadPodRunningAndReady", "HeadPodNotFound"),
        ("RayClusterProvisioned", provisioned, "AllPodRunningAndReadyFirstTime",
         "RayClusterPodsProvisioning"),
        ("RayClusterSuspended", suspended, "Suspended", "NotSuspended"),
    ]
    out = []
    for kind, ok, yes, no in wanted:
        value = "True" if ok else "False"
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == value else now
        out.append({"type": kind, "status": value, "reason": yes if ok else no,
                    "message": "", "lastTransitionTime": since})
    return out


def _head_replacement_events(spec: RayCluster, live: list[ObservedPod]) -> list[Event]:
    """With GCS fault tolerance, a head created while workers run replaces a lost one:
    the workers are kept (their raylets wait for the new GCS, and reconnect through the
    head Service's name), which the event says (KubeRay's reason, CreatedHeadPod)."""
    workers = [p for p in live if p.group != HEAD_GROUP and not p.finished]
    if not workers or not gcs_ft.enabled(spec):
        return []
    return [Event("Normal", "CreatedHeadPod",
                  f"creating a new head pod with GCS fault tolerance on: {len(workers)} "
                  "worker pod(s) kept, their raylets reconnect to the new head")]


def _epoch(created: str) -> float:
    try:
        return datetime.fromisoformat(created).timestamp()
    except ValueError:
        return 0.0


def _status(spec: RayCluster, pods: list[ObservedPod], forced_state: str | None) -> dict[str, Any]:
    live = [p for p in pods if not p.deleting and not p.finished]
    workers = [p for p in live if p.group != HEAD_GROUP]
    head = next((p for p in live if p.group == HEAD_GROUP), None)
    wanted = desired_replicas(spec)
    hosts = {g.group_name: g.num_of_hosts for g in spec.worker_groups}
    desired = sum(wanted[g] * hosts[g] for g in wanted)
    totals: dict[str, float] = {}
    if not spec.spec.suspend:
        for name, amount in spec.head.ray_resources.items():
            totals[name] = totals.get(name, 0.0) + amount
        for g in spec.worker_groups:
            for name, amount in g.ray_resources.items():
                nodes = wanted[g.group_name] * g.num_of_hosts
                totals[name] = totals.get(name, 0.0) + amount * nodes
    # KubeRay: available = Running, ready = Running with the Ready condition (the probes
    # passed); the cluster is ready when every pod is, the head included
    available = sum(1 for p in workers if p.phase == "Running")
    ready = sum(1 for p in workers if p.phase == "Running" and p.ready)
    head_ok = head is not None and head.phase == "Running" and head.ready
    state = forced_state or ("ready" if head_ok and ready >= desired else "")
    status: dict[str, Any] = {
        "state": state,
        "desiredWorkerReplicas": desired,
        "availableWorkerReplicas": available,
        "readyWorkerReplicas": ready,
        "minWorkerReplicas": sum(g.min_replicas * g.num_of_hosts for g in spec.worker_groups),
        "maxWorkerReplicas": sum(g.max_replicas * g.num_of_hosts for g in spec.worker_groups),
        "desiredCPU": _quantity(totals.get("CPU", 0.0)),
        "desiredMemory": _quantity(totals.get("memory", 0.0)),
        "desiredGPU": _quantity(totals.get("GPU", 0.0)),
        "desiredTPU": _quantity(totals.get("TPU", 0.0)),
        "head": {"serviceName": head_service_name(spec.name)},
        "endpoints": {},
    }
    if head is not None:
        status["head"]["podName"] = head.name
        if head.pod_ip:
            status["head"]["podIP"] = head.pod_ip
            status["head"]["serviceIP"] = head.pod_ip  # headless: DNS gives the pod IP
    return status


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
