"""The sidecar's status document, kept in a ConfigMap beside its RayCluster.

Local mode writes the status document to the cluster's directory; on
Kubernetes the sidecar writes the same document to the ConfigMap
``<cluster>-autoscaler-status`` (key ``status.json``), as Kubernetes'
cluster-autoscaler keeps its status in a ConfigMap. ``rayscale status NAME -n
NS`` reads it through the API server, and the operator's history records its
rounds and events (operator/history.py): neither needs to reach the pod.

The ConfigMap is owned by the RayCluster, so it goes with it. It is written
with server-side apply when what it says changes (node counts, demand, the
plan's capped and infeasible demand, a new event), at most every
:data:`MIN_INTERVAL_S`, and otherwise every :data:`HEARTBEAT_S` so its
``updated_at`` shows the sidecar lives. A write that fails is logged once and
dropped: the status never holds up scaling. The document holds no secret (it
is what ``rayscale status`` prints).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import ConfigMap

from rayscale.history.store import counts_of, demand_of
from rayscale.labels import CLUSTER_LABEL, RAY_API_GROUP

log = logging.getLogger("rayscale.autoscaler")

STATUS_KEY = "status.json"
COMPONENT = "autoscaler-status"
STATUS_LABELS = {"app.kubernetes.io/created-by": "rayscale",
                 "app.kubernetes.io/component": COMPONENT}
MIN_INTERVAL_S = 2.0
HEARTBEAT_S = 15.0
#: a ConfigMap holds at most 1 MiB; past this the node list is left out
MAX_BYTES = 512 * 1024
FIELD_MANAGER = "rayscale-autoscaler"


def status_configmap_name(cluster: str) -> str:
    return f"{cluster}-autoscaler-status"


def substance(status: dict[str, Any]) -> str:
    """What a reader would see change: counts, demand, capped/infeasible, the last event."""
    plan = status.get("plan") or {}
    events = status.get("events") or []
    return json.dumps([
        sorted((f"{g}/{s}", n) for (g, s), n in counts_of(status).items()),
        sorted(demand_of(status).items()),
        plan.get("capped"), plan.get("infeasible"),
        events[-1] if events else None,
        status.get("error"),
    ], sort_keys=True, default=str)


def encode(status: dict[str, Any]) -> str:
    """The document as JSON, without the node list if it would not fit."""
    text = json.dumps(status, default=str, separators=(",", ":"))
    if len(text) <= MAX_BYTES:
        return text
    slim = {**status, "nodes": [], "nodes_omitted": len(status.get("nodes") or [])}
    return json.dumps(slim, default=str, separators=(",", ":"))


class StatusConfigMap:
    """Publishes each round's status document (the loop's ``on_status``)."""

    def __init__(self, client: Client, cluster: str, namespace: str, cluster_uid: str | None,
                 clock: Any = time.monotonic) -> None:
        self.client = client
        self.cluster = cluster
        self.namespace = namespace
        self.cluster_uid = cluster_uid
        self.clock = clock
        self._last_substance: str | None = None
        self._last_write = -HEARTBEAT_S
        self._failing = False
        self._foreign = False

    def due(self, status: dict[str, Any]) -> bool:
        now = self.clock()
        if now - self._last_write < MIN_INTERVAL_S:
            return False
        return substance(status) != self._last_substance or now - self._last_write >= HEARTBEAT_S

    def publish(self, status: dict[str, Any]) -> None:
        if self._foreign or not self.due(status):
            return
        try:
            if self._last_substance is None and self._someone_elses():
                return
            self.client.apply(self.manifest(status), field_manager=FIELD_MANAGER, force=True)
        except Exception as exc:  # the status never stops the loop
            if not self._failing:
                log.warning("writing the status ConfigMap %s failed (scaling goes on): %s",
                            status_configmap_name(self.cluster), exc)
            self._failing = True
            self._last_write = self.clock()  # try again after the interval, not every round
            return
        if self._failing:
            log.info("the status ConfigMap is written again")
        self._failing = False
        self._last_write = self.clock()
        self._last_substance = substance(status)

    def _someone_elses(self) -> bool:
        """Whether a ConfigMap of that name exists that is not ours: it is left alone
        (taking it over would also make the RayCluster own it, and delete it with it)."""
        try:
            cm = self.client.get(ConfigMap, status_configmap_name(self.cluster),
                                 namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        labels = (cm.metadata.labels if cm.metadata else None) or {}
        if labels.get("app.kubernetes.io/component") == COMPONENT:
            return False
        log.error("a ConfigMap %s exists that rayscale did not make: the status is not "
                  "written there (rename it to get `rayscale status -n` and the history)",
                  status_configmap_name(self.cluster))
        self._foreign = True
        return True

    def manifest(self, status: dict[str, Any]) -> ConfigMap:
        owners = [OwnerReference(apiVersion=f"{RAY_API_GROUP}/v1", kind="RayCluster",
                                 name=self.cluster, uid=self.cluster_uid)] \
            if self.cluster_uid else None
        return ConfigMap(
            metadata=ObjectMeta(
                name=status_configmap_name(self.cluster), namespace=self.namespace,
                labels={**STATUS_LABELS, CLUSTER_LABEL: self.cluster},
                ownerReferences=owners,
            ),
            data={STATUS_KEY: encode(status)},
        )


def read_status(client: Client, cluster: str, namespace: str) -> dict[str, Any] | None:
    """The sidecar's last document, or None if it wrote none (or it is unreadable)."""
    try:
        cm = client.get(ConfigMap, status_configmap_name(cluster), namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return parse_document(cm.data or {})


def parse_document(data: dict[str, str]) -> dict[str, Any] | None:
    try:
        doc = json.loads(data.get(STATUS_KEY) or "null")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
