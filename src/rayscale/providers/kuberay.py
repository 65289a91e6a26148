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

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from lightkube import ApiError, Client
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.core_v1 import Event, Pod, ResourceQuota
from lightkube.types import PatchType

from rayscale.api import RayCluster, WorkerGroupSpec
from rayscale.labels import (
    CLUSTER_LABEL,
    DEFAULT_HEAD_PORTS,
    GROUP_LABEL_K8S,
    NODE_TYPE_LABEL,
    NODE_TYPE_WORKER,
    RAY_API_GROUP,
)
from rayscale.planner.state import Quota
from rayscale.providers.base import ProviderNode, ProviderState, QuotaView
from rayscale.providers.kube_kueue import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    elastic_queue,
    gated,
    headroom,
    kueue_quota,
)
from rayscale.providers.kube_quota import namespace_quotas, pod_cost, uncounted_cost
from rayscale.spec import parse_cluster_spec

#: The RayCluster resource for lightkube's client (the model is :class:`rayscale.api.RayCluster`).
RayClusterResource = create_namespaced_resource(RAY_API_GROUP, "v1", "RayCluster", "rayclusters")
LocalQueueResource = create_namespaced_resource(KUEUE_GROUP, KUEUE_VERSION, "LocalQueue",
                                                "localqueues")
ClusterQueueResource = create_global_resource(KUEUE_GROUP, KUEUE_VERSION, "ClusterQueue",
                                              "clusterqueues")
PENDING_PREFIX = "pending:"
_RETRIES = 8
QUOTA_RETRY_S = 300.0
#: how long after a pod is scheduled its admission may be missing from its ClusterQueue's
#: status (Kueue batches status updates by a second; its timestamps are whole seconds)
KUEUE_STATUS_LAG_S = 4.0
log = logging.getLogger(__name__)
GroupChange = Callable[[WorkerGroupSpec], WorkerGroupSpec]


class KubeRayProvider:
    def __init__(self, client: Client, name: str, namespace: str) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        # from the last nodes(): the RayCluster, and per group the launches (replicas)
        # that no pod stands for yet: the quota has not counted them
        self._cluster: RayCluster | None = None
        self._launching: dict[str, int] = {}
        # group -> the refusals (Event names) acted on while its launches wait
        self._refusals_seen: dict[str, set[str]] = {}
        # group -> when its launches began to wait for pods (a refusal before that is
        # about an earlier launch)
        self._waiting_since: dict[str, float] = {}
        self._quotas_unreadable_until = 0.0  # after a 403: plan without quotas until then
        # per group, pods Kueue has not admitted (gated) or admitted so lately that its
        # ClusterQueue's status may not count them yet (see _kueue_quota)
        self._gated: dict[str, int] = {}
        self._kueue_unreadable_until = 0.0  # after a 403 or 404: no Kueue quota until then

    # ------------------------------------------------------------ reading

    def cluster(self) -> RayCluster:
        """The RayCluster as it is now, validated (a SpecError if it is unusable)."""
        obj = self.client.get(RayClusterResource, self.name, namespace=self.namespace)
        return parse_cluster_spec(obj.to_dict())  # type: ignore[no-untyped-call]

    def head_gcs_address(self) -> str:
        """``podIP:port`` of the head's GCS, from the CR's status and the head's ports."""
        cluster = self.cluster()
        ip = cluster.status.head.pod_ip if cluster.status else None
        if not ip:
            raise RuntimeError(f"RayCluster {self.name} has no head pod IP in its status yet")
        ports = {p.name: p.container_port for p in cluster.head.template.spec.ray_container.ports}
        return f"{ip}:{ports.get('gcs-server', DEFAULT_HEAD_PORTS['gcs-server'])}"

    def _pods(self) -> list[Pod]:
        return list(self.client.list(
            Pod, namespace=self.namespace,
            labels={CLUSTER_LABEL: self.name, NODE_TYPE_LABEL: NODE_TYPE_WORKER},
        ))

    def nodes(self) -> list[ProviderNode]:
        cluster = self.cluster()
        pods = self._pods()
        self._cluster = cluster
        self._launching = {}
        self._gated = {}
        out: list[ProviderNode] = []
        for group in cluster.worker_groups:
            name = group.group_name
            doomed = set(group.scale_strategy.workers_to_delete)
            counted = 0
            for pod in pods:
                if _group_of(pod) != name:
                    continue
                state = _state(pod, doomed)
                if state in ("launching", "started"):
                    counted += 1
                if _awaiting_kueue(pod, state):
                    self._gated[name] = self._gated.get(name, 0) + 1
                meta = pod.metadata
                created = meta.creationTimestamp if meta else None
                out.append(ProviderNode(
                    id=_name(pod), group=name, state=state,
                    launched_at=created.timestamp() if created else time.time(),
                    ip=pod.status.podIP if pod.status else None,
                ))
            missing = max(0, (group.replicas or 0) - counted)
            self._launching[name] = missing
            out += [ProviderNode(f"{PENDING_PREFIX}{name}:{k}", name, "launching", time.time())
                    for k in range(missing)]
        return self._refused(cluster, out)

    def _refused(self, cluster: RayCluster, nodes: list[ProviderNode]) -> list[ProviderNode]:
        """Launches the API refused (the operator's ``FailedToCreateWorkerPod``): dead, so the
        loop backs their group off at once and the demand moves on.

        Asked only while a launch waits for its pod. A refusal counts only if it came
        after the group's launches began to wait, each once, and each kills one waiting
        launch (a burst where some pods were created and some refused keeps the created).
        """
        now = time.time()
        for group, missing in self._launching.items():
            if not missing:
                self._waiting_since.pop(group, None)
                self._refusals_seen.pop(group, None)
            else:
                self._waiting_since.setdefault(group, now)
        if not self._waiting_since:
            return nodes
        refusals = self._refusals(cluster)
        if not refusals:
            return nodes
        out = []
        for node in nodes:
            pending = refusals.get(node.group)
            if pending and node.id.startswith(PENDING_PREFIX):
                message = pending.pop()
                node = replace(node, state="dead", reason=f"the API refused the pod: {message}")
            out.append(node)
        return out

    def _refusals(self, cluster: RayCluster) -> dict[str, list[str]]:
        """Per waiting group, the messages of refusals not acted on yet."""
        uid = cluster.metadata.uid
        if not uid:
            return {}
        try:
            events = list(self.client.list(Event, namespace=self.namespace, fields={
                "involvedObject.uid": uid, "reason": "FailedToCreateWorkerPod"}))
        except ApiError as exc:
            if exc.status.code != 403:
                raise
            return {}  # an older role without events: the launch timeout catches refusals
        found: dict[str, list[tuple[float, str]]] = {}
        for event in events:
            group = _event_group(event)
            since = self._waiting_since.get(group or "")
            stamp = _event_time(event)
            # event times are whole seconds: a refusal within the second the launch
            # began to wait is taken as its own
            if group is None or since is None or stamp < math.floor(since) - 1:
                continue
            name = (event.metadata.name if event.metadata else None) or ""
            seen = self._refusals_seen.setdefault(group, set())
            if name not in seen:
                seen.add(name)
                found.setdefault(group, []).append((stamp, event.message or ""))
        return {group: [message for _, message in sorted(items)]
                for group, items in found.items()}

    def quotas(self) -> QuotaView:
        """The namespace's ResourceQuotas (kube_quota.py) and, for an elastic RayCluster
        under Kueue, its ClusterQueue (kube_kueue.py), as the planner's quotas."""
        cluster = self._cluster or self.cluster()
        items = self._resource_quotas()
        costs = {g.group_name: pod_cost(g) for g in cluster.worker_groups}
        quotas = namespace_quotas(items, costs, self._launching)
        under_kueue = self._kueue_quota(cluster, costs)
        if under_kueue is not None:
            quotas.append(under_kueue)
        return QuotaView(quotas, costs) if quotas else QuotaView()

    def _resource_quotas(self) -> list[dict[str, Any]]:
        if time.monotonic() < self._quotas_unreadable_until:
            return []
        try:
            return [q.to_dict() for q in
                    self.client.list(ResourceQuota, namespace=self.namespace)]
        except ApiError as exc:
            if exc.status.code != 403:
                raise
            # an older role without resourcequotas: plan without them (a refused pod
            # still backs its group off); asked again later (a role may be upgraded)
            self._quotas_unreadable_until = time.monotonic() + QUOTA_RETRY_S
            return []

    def _kueue_quota(self, cluster: RayCluster, costs: dict[str, dict[str, float]]
                     ) -> Quota | None:
        """What Kueue will still admit for an elastic RayCluster (kube_kueue.py), less
        what this cluster asked for and Kueue has not admitted yet."""
        meta = cluster.metadata
        queue = elastic_queue(meta.labels, meta.annotations)
        if queue is None or time.monotonic() < self._kueue_unreadable_until:
            return None
        try:
            local = self.client.get(LocalQueueResource, queue, namespace=self.namespace)
            name = str((local.get("spec") or {}).get("clusterQueue") or "")
            cq: dict[str, Any] = dict(self.client.get(ClusterQueueResource, name))
            cohort = (cq.get("spec") or {}).get("cohortName")
            members = [dict(o) for o in self.client.list(ClusterQueueResource)
                       if (o.get("spec") or {}).get("cohortName") == cohort
                       and o["metadata"]["name"] != name] if cohort else []
        except ApiError as exc:
            if exc.status.code not in (403, 404):
                raise
            # no role to read ClusterQueues, or no such queue (yet): plan without it, and
            # ask again later; Kueue still decides (pods wait gated, launches time out)
            log.warning("planning without the Kueue quota of LocalQueue %s: %s", queue,
                        exc.status.message)
            self._kueue_unreadable_until = time.monotonic() + QUOTA_RETRY_S
            return None
        waiting = {g: self._launching.get(g, 0) + self._gated.get(g, 0)
                   for g in set(self._launching) | set(self._gated)}
        return kueue_quota(name, headroom(cq, members), uncounted_cost(costs, waiting))

    # ------------------------------------------------------------- acting

    def launch(self, group: str, count: int) -> list[str]:
        self._update_group(
            group, lambda g: g.model_copy(update={"replicas": (g.replicas or 0) + count})
        )
        return [f"{PENDING_PREFIX}{group}:+{k}" for k in range(count)]

    def terminate(self, node_id: str) -> None:
        if node_id.startswith(PENDING_PREFIX):
            group = node_id[len(PENDING_PREFIX):].split(":", 1)[0]
            self._update_group(
                group, lambda g: g.model_copy(update={"replicas": max(0, (g.replicas or 0) - 1)})
            )
            return
        pod_groups = {_name(p): _group_of(p) for p in self._pods()}
        pod_group = pod_groups.get(node_id)
        if pod_group is None:
            return  # already gone
        live = set(pod_groups)

        def delete(g: WorkerGroupSpec) -> WorkerGroupSpec:
            names = [n for n in g.scale_strategy.workers_to_delete if n in live]
            replicas = g.replicas or 0
            if node_id not in names:
                names.append(node_id)
                replicas = max(0, replicas - 1)
            strategy = g.scale_strategy.model_copy(update={"workers_to_delete": names})
            return g.model_copy(update={"scale_strategy": strategy, "replicas": replicas})

        self._update_group(pod_group, delete)

    def forget(self, node_id: str) -> None:
        """A dead or unschedulable pod: take it out of the desired count and delete it."""
        self.terminate(node_id)

    def _update_group(self, group: str, change: GroupChange) -> None:
        for _ in range(_RETRIES):
            cluster = self.cluster()
            cluster.group(group)  # KeyError naming the known groups
            groups = [
                (change(g) if g.group_name == group else g).to_manifest()
                for g in cluster.worker_groups
            ]
            patch = {
                "metadata": {"resourceVersion": cluster.metadata.resource_version},
                "spec": {"workerGroupSpecs": groups},
            }
            try:
                self.client.patch(RayClusterResource, self.name, patch,
                                  namespace=self.namespace, patch_type=PatchType.MERGE)
                return
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
        raise RuntimeError(f"could not update RayCluster {self.name}: too many conflicts")


def _event_group(event: Event) -> str | None:
    """The group of a ``FailedToCreateWorkerPod`` (``fieldPath: spec.workerGroupSpecs{G}``)."""
    path = (event.involvedObject.fieldPath if event.involvedObject else None) or ""
    prefix = "spec.workerGroupSpecs{"
    if path.startswith(prefix) and path.endswith("}"):
        return path[len(prefix):-1]
    return None


def _event_time(event: Event) -> float:
    """When it last happened (epoch seconds; 0 if unknown)."""
    stamp = event.lastTimestamp or event.eventTime or event.firstTimestamp
    return stamp.timestamp() if isinstance(stamp, datetime) else 0.0


def _name(pod: Pod) -> str:
    return (pod.metadata.name if pod.metadata else None) or ""


def _group_of(pod: Pod) -> str | None:
    labels = (pod.metadata.labels if pod.metadata else None) or {}
    return labels.get(GROUP_LABEL_K8S)


def _awaiting_kueue(pod: Pod, state: ProviderState) -> bool:
    """Gated by Kueue (its slice not admitted), or scheduled so lately that Kueue's
    ClusterQueue status may not count it yet (Kueue writes it in batches of a second)."""
    if state == "launching" and gated(pod.spec.schedulingGates if pod.spec else None):
        return True
    for cond in (pod.status.conditions if pod.status else None) or []:
        if cond.type == "PodScheduled" and cond.status == "True" and cond.lastTransitionTime:
            return time.time() - cond.lastTransitionTime.timestamp() < KUEUE_STATUS_LAG_S
    return False


def _state(pod: Pod, doomed: set[str]) -> ProviderState:
    meta, status = pod.metadata, pod.status
    if meta is None or meta.deletionTimestamp or _name(pod) in doomed:
        return "stopping"
    phase = (status.phase if status else None) or "Pending"
    if phase in ("Failed", "Succeeded"):
        return "dead"
    if phase == "Running":
        return "started"
    for cond in (status.conditions if status else None) or []:
        unschedulable = cond.status == "False" and cond.reason == "Unschedulable"
        if cond.type == "PodScheduled" and unschedulable:
            return "dead"
    return "launching"
