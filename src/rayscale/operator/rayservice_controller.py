"""The RayService controller: watch RayServices, their RayClusters, Services and pods; act.

Built like the RayJob controller (:mod:`rayscale.operator.rayjob_controller`)
from :mod:`rayscale.operator.watch`: four informers (RayServices; the
RayClusters and Services labelled ``ray.io/originated-from-crd=RayService``,
indexed by their RayService; the pods labelled ``ray.io/serve``, which are the
pods of those clusters, indexed by cluster) feed caches and queue the
RayService's key; workers reconcile one key at a time.

A reconcile observes (the caches; for the active and pending clusters, Serve's
applications from the head's dashboard and the head's Serve proxy health),
asks the pure state machine (:func:`rayscale.operator.rayservice_decide.decide`)
what to do, and acts: create, update in place or delete RayClusters, label head
pods ``ray.io/serve``, PUT ``serveConfigV2`` to a cluster's Serve, create or
switch the head and serve Services, post Events, patch the status. A RayService
is polled every 1-2 s (KubeRay: 2 s), for Serve's statuses and proxy health,
which no watch reports.

What only this process knows, as in KubeRay: which Serve config each cluster
was given (a restarted operator gives it once more; Serve takes an unchanged
config as a no-op) and when a cluster that no longer serves is to be deleted
(a restarted operator starts ``rayClusterDeletionDelaySeconds`` again).

The RayClusters it creates are reconciled by the RayCluster controller like any
other (with ``enableInTreeAutoscaling``, rayscale's autoscaler sidecar runs in
their head pods); their pods carry ``ray.io/serve`` from the start
(:mod:`rayscale.operator.desired`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import httpx2 as httpx
from lightkube import ApiError, Client
from lightkube.config import client_adapter
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Event, Pod, Service
from lightkube.types import CascadeType, PatchType

from rayscale.labels import (
    CLUSTER_LABEL,
    NODE_TYPE_HEAD,
    NODE_TYPE_LABEL,
    ORIGIN_CRD_LABEL,
    ORIGIN_NAME_LABEL,
    SERVE_LABEL,
)
from rayscale.operator import dashboard, serve_api
from rayscale.operator.desired import PodSettings
from rayscale.operator.events import event_manifest
from rayscale.operator.managed import left_to_another
from rayscale.operator.rayjob_decide import merge_patch
from rayscale.operator.rayjob_desired import dashboard_port, random_suffix
from rayscale.operator.rayservice_decide import (
    ZERO_DOWNTIME_ENV,
    Apps,
    ClusterView,
    Decision,
    Observed,
    decide,
    status_patch,
    validate,
)
from rayscale.operator.rayservice_desired import (
    HASH_ANNOTATION,
    NUM_WORKER_GROUPS_ANNOTATION,
    RAYSERVICE_CRD,
    VERSION_ANNOTATION,
    ray_cluster,
    rayservice_head_service,
    selected_cluster,
    serve_config_body,
    serve_port,
    serve_service,
    serve_service_name_of,
)
from rayscale.operator.watch import (
    Informer,
    Obj,
    ObjectCache,
    Watched,
    WorkQueue,
    informers_for,
    origin_key,
    own_key,
    owned_by,
    serve_queue,
    start_workers,
    stop_workers,
)
from rayscale.ports import free_port
from rayscale.spec import parse_cluster_spec

log = logging.getLogger(__name__)

RayServiceResource = create_namespaced_resource("ray.io", "v1", "RayService", "rayservices")
RayClusterResource = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
COMPONENT = "rayscale-operator"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
#: a config a cluster's Serve refused (an HTTP error, not an unreachable dashboard) is
#: offered to it again after this long, or at once when serveConfigV2 changes
REFUSED_RETRY_S = 60.0
ORIGIN_SELECTOR = f"{ORIGIN_CRD_LABEL}={RAYSERVICE_CRD}"


@dataclass(frozen=True)
class RayServiceSettings:
    pods: PodSettings
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    workers: int = 2
    server_timeout_s: int = 300



def service_key_of(obj: Obj) -> str | None:
    """The ``namespace/name`` of the RayService a cluster or Service comes from."""
    return origin_key(obj, RAYSERVICE_CRD, ORIGIN_NAME_LABEL, ORIGIN_CRD_LABEL)

def pod_cluster_key(obj: Obj) -> str | None:
    meta = obj.get("metadata") or {}
    cluster = (meta.get("labels") or {}).get(CLUSTER_LABEL)
    return f"{meta.get('namespace')}/{cluster}" if cluster else None



def _ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def _deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _pod_view(pod: Obj | None) -> tuple[Any, ...] | None:
    """What of a pod matters to a RayService (a change of it queues a reconcile)."""
    if pod is None:
        return None
    meta = pod.get("metadata") or {}
    return (_ready(pod), (pod.get("status") or {}).get("podIP"), _deleting(pod),
            (meta.get("labels") or {}).get(SERVE_LABEL))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class ServiceNotBuilt(Exception):
    """The serve Service cannot be made from this spec (said in an Event): retried."""


class RayServiceController:
    """Informers, caches, the work queue and the workers of RayServices."""

    def __init__(self, client: Client, settings: RayServiceSettings) -> None:
        self.client = client
        self.settings = settings
        self.queue = WorkQueue()
        self.services = ObjectCache(index=own_key, on_change=self._changed)
        self.clusters = ObjectCache(index=service_key_of, on_change=self._changed)
        self.svcs = ObjectCache(index=service_key_of, on_change=self._changed)
        self.pods = ObjectCache(index=pod_cluster_key, on_change=self._pod_changed)
        self.failures: dict[str, int] = {}
        self.said: dict[str, set[str]] = {}  # warnings posted, per RayService
        #: RayService key -> cluster name -> when that cluster is to be deleted
        self.deletions: dict[str, dict[str, datetime]] = {}
        #: RayService key -> cluster name -> the serveConfigV2 it was given
        self.configs: dict[str, dict[str, str]] = {}
        # RayService key -> cluster -> (a config its Serve refused, when to offer it again):
        # the same refused config is not PUT every second
        self.refused: dict[str, dict[str, tuple[str, float]]] = {}
        self.informers: list[Informer] = []
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._http = client_adapter.Client(
            self.client.config, client_adapter.ConnectionParams(timeout=httpx.Timeout(10.0)))
        kinds = [
            ("rayservices", self.services, "apis/ray.io/v1", "rayservices", None,
             "ray.io/v1", "RayService"),
            ("rayservice-clusters", self.clusters, "apis/ray.io/v1", "rayclusters",
             ORIGIN_SELECTOR, "ray.io/v1", "RayCluster"),
            ("rayservice-services", self.svcs, "api/v1", "services", ORIGIN_SELECTOR,
             "v1", "Service"),
            ("rayservice-pods", self.pods, "api/v1", "pods", SERVE_LABEL, "v1", "Pod"),
        ]
        self.informers += informers_for((Watched(*k) for k in kinds), self._http,
                                        self.settings.namespaces,
                                        self.settings.server_timeout_s)
        self._workers = start_workers(self.informers, self._work, "rayservice",
                                      self.settings.workers)

    def stop(self) -> None:
        self._stopping.set()
        stop_workers(self.queue, self.informers, self._workers)

    def _changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None:
            self.queue.add(key)

    def _pod_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is None or _pod_view(old) == _pod_view(new):
            return
        ns, cluster = key.split("/", 1)
        owner = service_key_of(self.clusters.get(ns, cluster) or {})
        if owner is not None:
            self.queue.add(owner)

    def _work(self) -> None:
        serve_queue(self.informers, self.queue, self._stopping, self.process)

    def process(self, key: str) -> None:
        ns, name = key.split("/", 1)
        body = self.services.get(ns, name)
        if body is None:
            for state in (self.failures, self.said, self.deletions, self.configs,
                          self.refused):
                state.pop(key, None)
            return
        try:
            self._reconcile(body)
            self.failures.pop(key, None)
        except Exception as exc:
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
            if isinstance(exc, ServiceNotBuilt | ApiError | httpx.HTTPError):
                log.warning("reconcile of RayService %s failed (retry in %.1f s): %s", key,
                            delay, _first_line(exc))
            else:
                log.exception("reconcile of RayService %s failed (retry in %.1f s)", key,
                              delay)
            self.queue.add_after(key, delay)

    # ------------------------------------------------------------- observe

    def _reconcile(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        key = f"{ns}/{meta['name']}"
        if meta.get("deletionTimestamp"):
            return  # the garbage collector removes what it owns
        if left_to_another(body, "RayService", self.said):  # as KubeRay: MultiKueue's
            return
        service, invalid, reason = validate(body)
        status = body.get("status") or {}
        watched = {(status.get(part) or {}).get("rayClusterName")
                   for part in ("activeServiceStatus", "pendingServiceStatus")} - {None, ""}
        applied = self.configs.get(key, {})
        views: dict[str, ClusterView] = {}
        for cluster in self.clusters.indexed(key):
            if not owned_by(cluster, uid):
                continue
            name = cluster["metadata"]["name"]
            ask = service is not None and name in watched and not _deleting(cluster)
            views[name] = self._view(cluster, ask=ask,
                                     exclude_head=bool(service is not None and
                                                       service.spec.exclude_head_pod_from_serve_svc),
                                     applied=applied.get(name))
        owned_svcs = [s for s in self.svcs.indexed(key) if owned_by(s, uid)]
        serve_svc = self.svcs.get(ns, serve_service_name_of(body)) \
            if service is not None else None
        seen = Observed(
            body=body, service=service, invalid=invalid, invalid_reason=reason,
            clusters=views,
            serving=selected_cluster(serve_svc) if owned_by(serve_svc, uid) else None,
            services=tuple(sorted(s["metadata"]["name"] for s in owned_svcs
                                  if not _deleting(s))),
            deletions=dict(self.deletions.get(key, {})), now=datetime.now(UTC),
            new_suffix=random_suffix(), zero_downtime_env=os.environ.get(ZERO_DOWNTIME_ENV))
        decision = decide(seen)
        self._act(body, decision, key)

    def _view(self, cluster: Obj, ask: bool, exclude_head: bool,
              applied: str | None) -> ClusterView:
        meta = cluster["metadata"]
        ns, name = meta["namespace"], meta["name"]
        annotations = meta.get("annotations") or {}
        pods = [p for p in self.pods.indexed(f"{ns}/{name}") if not _deleting(p)]
        heads = [p for p in pods
                 if (p["metadata"].get("labels") or {}).get(NODE_TYPE_LABEL) == NODE_TYPE_HEAD]
        head = heads[0] if len(heads) == 1 else None
        workers = sum(1 for p in pods if _ready(p)
                      and (p["metadata"].get("labels") or {}).get(NODE_TYPE_LABEL) != NODE_TYPE_HEAD
                      and (p["metadata"].get("labels") or {}).get(SERVE_LABEL) == "true")
        head_ip = ((head or {}).get("status") or {}).get("podIP")
        head_ready = head is not None and _ready(head)
        healthy: bool | None = None
        apps: Apps | None = None
        error: str | None = None
        if ask and head is not None and head_ip:
            if not exclude_head and (head.get("status") or {}).get("phase") == "Running":
                healthy = serve_api.proxy_healthy(head_ip, serve_port(cluster.get("spec") or {}))
            if head_ready:
                try:
                    apps = serve_api.applications(self._base_url(cluster, head_ip),
                                                  dashboard.auth_headers(self.client, cluster))
                except (httpx.HTTPError, serve_api.ServeApiError, ValueError) as exc:
                    error = _first_line(exc)
                    log.info("RayService cluster %s/%s: Serve's applications unknown: %s",
                             ns, name, error)
        return ClusterView(
            name=name, deleting=_deleting(cluster),
            hash=annotations.get(HASH_ANNOTATION),
            worker_groups=annotations.get(NUM_WORKER_GROUPS_ANNOTATION),
            version=annotations.get(VERSION_ANNOTATION),
            status=dict(cluster.get("status") or {}),
            head_pod=head["metadata"]["name"] if head is not None else None,
            head_ready=head_ready,
            head_label=((head or {}).get("metadata", {}).get("labels") or {}).get(SERVE_LABEL),
            proxy_healthy=healthy, apps=apps, serve_error=error, applied_config=applied,
            ready_workers=workers,
        )

    def _base_url(self, cluster: Obj, head_ip: str) -> str:
        """The dashboard: at the head pod's IP where pods share this machine's network
        (the RayCluster's status may not name it yet), else as the RayJob controller
        reaches it."""
        if self.settings.pods.shared_network:
            return f"http://{head_ip}:{dashboard_port(cluster)}"
        return dashboard.address(cluster, shared_network=False)

    # ----------------------------------------------------------------- act

    def _act(self, body: dict[str, Any], decision: Decision, key: str) -> None:
        meta = body["metadata"]
        ns = meta["namespace"]
        shared = self.settings.pods.shared_network
        if decision.create_cluster:
            self._create_cluster(body, decision.create_cluster, shared)
        for name in decision.update_clusters:
            self._update_cluster(body, name, shared)
        for name in decision.delete_clusters:
            try:
                self.client.delete(RayClusterResource, name, namespace=ns,
                                   cascade=CascadeType.BACKGROUND)
            except ApiError as exc:
                if exc.status.code != 404:
                    self._event(body, "Warning", "FailedToDeleteRayCluster",
                                f"Failed to delete the RayCluster {ns}/{name}: "
                                f"{_first_line(exc)}")
                    raise
            self.clusters.mark_deleting(ns, name)
            self._event(body, "Normal", "DeletedRayCluster", f"Deleted the RayCluster {ns}/{name}")
        schedule = self.deletions.setdefault(key, {})
        for name, when in decision.schedule.items():
            schedule[name] = when
            log.info("RayService %s: RayCluster %s/%s is deleted at %s (it serves no more)",
                     key, ns, name, when.isoformat(timespec="seconds"))
        for name in decision.forget:
            schedule.pop(name, None)
        for pod, value in decision.labels:
            self._label_head(body, pod, value)
        for name in decision.apply_config:
            if not self._deploy(body, name, shared):
                decision.soon(1.0)  # the dashboard is not up yet: try again shortly
        if decision.services_to:
            self._point_services(body, decision.services_to)
        for name in decision.delete_services:
            try:
                self.client.delete(Service, name, namespace=ns)
            except ApiError as exc:
                if exc.status.code != 404:
                    self._event(body, "Warning", "FailedToDeleteService",
                                f"Failed to delete the Service {ns}/{name} during suspend: "
                                f"{_first_line(exc)}")
                    raise
            self.svcs.mark_deleting(ns, name)
            self._event(body, "Normal", "DeletedService",
                        f"Deleted the Service {ns}/{name} during suspend")
        for kind, reason, message in decision.events:
            self._event(body, kind, reason, message)
        if decision.status is not None:
            self._patch_status(body, decision.status)
        written = decision.status or body.get("status") or {}
        kept = {(written.get(part) or {}).get("rayClusterName")
                for part in ("activeServiceStatus", "pendingServiceStatus")}
        configs = self.configs.get(key, {})
        for name in [n for n in configs if n not in kept]:  # KubeRay's cleanUpServeConfigCache
            configs.pop(name)
        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after)

    def _create_cluster(self, body: dict[str, Any], name: str, shared: bool) -> None:
        ns = body["metadata"]["namespace"]
        manifest = ray_cluster(body, name, free_port() if shared else None)
        try:
            created = self.client.create(
                cast(Any, RayClusterResource).from_dict(manifest), namespace=ns)
        except ApiError as exc:
            if exc.status.code == 409:
                return  # made by an earlier reconcile; the watch brings it
            self._event(body, "Warning", "FailedToCreateRayCluster",
                        f"Failed to create the RayCluster {ns}/{name}: {_first_line(exc)}")
            raise
        self.clusters.upsert(created.to_dict())
        self._event(body, "Normal", "CreatedRayCluster", f"Created the RayCluster {ns}/{name}")

    def _update_cluster(self, body: dict[str, Any], name: str, shared: bool) -> None:
        """KubeRay's in-place update: the spec, labels and annotations replaced (a JSON
        patch on the version read, so a change made meanwhile is read again)."""
        ns = body["metadata"]["namespace"]
        current = self.clusters.get(ns, name)
        if current is None:
            return
        port = serve_port(current.get("spec") or {}) if shared else None
        goal = ray_cluster(body, name, port, current=current)
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion",
             "value": current["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec", "value": goal["spec"]},
            {"op": "add", "path": "/metadata/labels", "value": goal["metadata"]["labels"]},
            {"op": "add", "path": "/metadata/annotations",
             "value": goal["metadata"]["annotations"]},
        ]
        try:
            patched = self.client.patch(RayClusterResource, name, ops, namespace=ns,
                                        patch_type=PatchType.JSON)
        except ApiError as exc:
            self._event(body, "Warning", "FailedToUpdateRayCluster",
                        f"Failed to update the RayCluster {ns}/{name}: {_first_line(exc)}")
            raise
        self.clusters.upsert(patched.to_dict())  # type: ignore[no-untyped-call]
        self._event(body, "Normal", "UpdatedRayCluster", f"Updated the RayCluster {ns}/{name}")

    def _label_head(self, body: dict[str, Any], pod: str, value: str) -> None:
        ns = body["metadata"]["namespace"]
        try:
            patched = self.client.patch(Pod, pod, {"metadata": {"labels": {SERVE_LABEL: value}}},
                                        namespace=ns, patch_type=PatchType.MERGE)
        except ApiError as exc:
            if exc.status.code == 404:
                return
            self._event(body, "Warning", "FailedToUpdateHeadPodServeLabel",
                        f'Failed to update the serve label to "{value}" for the Head Pod '
                        f"{ns}/{pod}: {_first_line(exc)}")
            raise
        self.pods.upsert(patched.to_dict())
        self._event(body, "Normal", "UpdatedHeadPodServeLabel",
                    f'Updated the serve label to "{value}" for the Head Pod {ns}/{pod}')

    def _deploy(self, body: dict[str, Any], name: str, shared: bool) -> bool:
        """PUT ``serveConfigV2`` to the cluster's Serve; False when its dashboard does not
        answer yet (right after the head turned Ready). A refused config is said once (an
        Event) and not PUT again for :data:`REFUSED_RETRY_S` unless it changes."""
        ns = body["metadata"]["namespace"]
        key = f"{ns}/{body['metadata']['name']}"
        cluster = self.clusters.get(ns, name)
        if cluster is None:
            return True
        heads = [p for p in self.pods.indexed(f"{ns}/{name}") if not _deleting(p) and
                 (p["metadata"].get("labels") or {}).get(NODE_TYPE_LABEL) == NODE_TYPE_HEAD]
        head_ip = ((heads[0].get("status") or {}).get("podIP")) if heads else None
        if not head_ip:
            return False
        text = str(body["spec"].get("serveConfigV2") or "")
        refused, until = self.refused.get(key, {}).get(name, ("", 0.0))
        if refused == text and time.monotonic() < until:
            return True  # refused as it is: offered again later, or once it changes
        port = serve_port(cluster.get("spec") or {}) if shared else None
        try:
            serve_api.deploy(self._base_url(cluster, head_ip),
                             dashboard.auth_headers(self.client, cluster),
                             serve_config_body(text, port, head_ip if shared else None))
        except httpx.TransportError as exc:
            log.info("RayService %s: the dashboard of %s/%s does not take the config yet: %s",
                     key, ns, name, _first_line(exc))
            return False
        except (httpx.HTTPError, serve_api.ServeApiError) as exc:
            self._event(body, "Warning", "FailedToUpdateServeApplications",
                        f"Failed to update serve applications to the RayCluster {ns}/{name}: "
                        f"{_first_line(exc)}")
            self.refused.setdefault(key, {})[name] = (text, time.monotonic() + REFUSED_RETRY_S)
            return True
        self.configs.setdefault(key, {})[name] = text
        self._event(body, "Normal", "UpdatedServeApplications",
                    f"Updated serve applications to the RayCluster {ns}/{name}")
        return True

    def _point_services(self, body: dict[str, Any], cluster_name: str) -> None:
        """The head and serve Services, created or switched to ``cluster_name`` (KubeRay's
        ``reconcileServicesToReadyCluster``: updated only when the cluster changes)."""
        ns = body["metadata"]["namespace"]
        cluster = self.clusters.get(ns, cluster_name)
        if cluster is None:
            return
        try:
            serve = serve_service(body, cluster)
        except ValueError as exc:
            self._event(body, "Warning", "FailedToCreateService",
                        f"Failed to create the serve service for {ns}/{body['metadata']['name']}"
                        f": {exc}")
            raise ServiceNotBuilt(str(exc)) from None
        typed = parse_cluster_spec({k: v for k, v in cluster.items() if k != "status"})
        head = rayservice_head_service(body, typed, self.settings.pods)
        for manifest in (head, serve):
            self._ensure_service(body, manifest)

    def _ensure_service(self, body: dict[str, Any], manifest: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        existing = self.svcs.get(ns, name)
        if existing is None:
            try:
                created = self.client.create(cast(Service, Service.from_dict(manifest)),
                                             namespace=ns)
            except ApiError as exc:
                if exc.status.code == 409:  # there, not labelled ours (or not seen yet)
                    self._event(body, "Warning", "FailedToCreateService",
                                f"Failed to create the service {ns}/{name}: it exists and "
                                "is not this RayService's")
                    raise
                self._event(body, "Warning", "FailedToCreateService",
                            f"Failed to create the service {ns}/{name}, {_first_line(exc)}")
                raise
            self.svcs.upsert(created.to_dict())
            self._event(body, "Normal", "CreatedService", f"Created the service {ns}/{name}")
            return
        old_spec = existing.get("spec") or {}
        new_spec = manifest["spec"]

        def ports(spec: dict[str, Any]) -> list[tuple[Any, ...]]:
            return sorted((p.get("name"), p.get("port"), p.get("targetPort", p.get("port")))
                          for p in spec.get("ports") or [])

        if selected_cluster(existing) == selected_cluster(manifest) \
                and ports(old_spec) == ports(new_spec):
            return
        patch = {"metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]},
                 "spec": {"selector": merge_patch(old_spec.get("selector") or {},
                                                  new_spec.get("selector") or {}),
                          "ports": new_spec.get("ports") or []}}
        try:
            patched = self.client.patch(Service, name, patch, namespace=ns,
                                        patch_type=PatchType.MERGE)
        except ApiError as exc:
            self._event(body, "Warning", "FailedToUpdateService",
                        f"Failed to update the service {ns}/{name}, {_first_line(exc)}")
            raise
        self.svcs.upsert(patched.to_dict())
        self._event(body, "Normal", "UpdatedService", f"Updated the service {ns}/{name}")

    def _patch_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        meta = body["metadata"]
        patch = status_patch(dict(body.get("status") or {}), status)
        patched = self.client.patch(
            RayServiceResource.Status, meta["name"],
            {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": patch},
            namespace=meta["namespace"], patch_type=PatchType.MERGE)
        self.services.upsert(patched.to_dict())  # type: ignore[no-untyped-call]

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if kind == "Warning":  # the same warning once (a bad spec is seen at every poll)
            seen = self.said.setdefault(key, set())
            if message in seen:
                return
            seen.add(message)
        log.info("RayService %s: %s %s: %s", key, kind, reason, message)
        event = event_manifest(body, "RayService", kind, reason, message, COMPONENT)
        try:
            self.client.create(cast(Event, Event.from_dict(event)), namespace=meta["namespace"])
        except (ApiError, httpx.HTTPError) as exc:
            log.warning("could not post event %s on RayService %s: %s", reason, key, exc)
