"""The operator: watch RayClusters and their pods, reconcile a cluster when either changes.

kopf runs the process (login, settings, startup and cleanup); the watching and
reconciling is the :class:`Controller`'s, built from :mod:`rayscale.operator.watch`:

- four informers list, then watch, RayClusters, the pods labelled
  ``ray.io/cluster``, the Services labelled so and the metadata (only) of the
  Secrets labelled so (server-side selectors), into in-memory caches indexed by
  RayCluster (``namespace/name``);
- a change that matters (a RayCluster's new resourceVersion; a pod added,
  deleted, or changed in phase, readiness, deletion or address) queues that
  RayCluster's key; workers reconcile queued keys from the caches, one worker
  per key at a time, so a reconcile makes API calls only to act (create or
  delete pods, create the Service or the token Secret, patch a status that
  changed): an idle cluster costs none;
- a cluster's status is written at most every 0.25 s: an isolated change, or
  a change of state (ready, ...), is written at once, pods that change within
  that time (a burst of pods turning Running) share one write;
- the operator's own writes go into the caches as their responses come back
  (a created pod is counted before the create call returns: no duplicates), and
  the workers start only once every informer has listed, so a restarted
  operator reconciles from a complete, fresh view of every cluster;
- a reconcile that failed is retried with a backoff (0.5 s doubling to 30 s),
  on the work queue's timer, which sleeps while nothing is pending.

Owned objects carry owner references: deleting the RayCluster lets Kubernetes'
garbage collector remove them. With GCS fault tolerance on Redis, KubeRay's cleanup
finalizer and Job, and a look at the cluster's Redis before its head is created, are
:mod:`rayscale.operator.gcs_ft_wiring`'s.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import httpx2 as httpx
import kopf
from lightkube import ApiError, Client
from lightkube.config import client_adapter
from lightkube.resources.core_v1 import Event, Pod, Secret, Service
from lightkube.types import PatchType

from rayscale.api import AutoscalerOptions, RayCluster
from rayscale.autoscaler.kube_status import STATUS_LABELS
from rayscale.kubedecode import warm_up
from rayscale.labels import (
    AUTOSCALER_METRICS_PORT,
    AUTOSCALER_METRICS_PORT_NAME,
    CLUSTER_LABEL,
    GROUP_LABEL_K8S,
    NODE_TYPE_HEAD,
    NODE_TYPE_LABEL,
    ORIGIN_CRD_LABEL,
)
from rayscale.operator import auth, gcs_ft
from rayscale.operator.desired import (
    PodSettings,
    gcs_port,
    head_ports,
    head_service,
)
from rayscale.operator.events import event_manifest
from rayscale.operator.gcs_ft_wiring import GcsFtWiring, redis_conditions
from rayscale.operator.history import OperatorHistory
from rayscale.operator.managed import left_to_another
from rayscale.operator.metrics import OperatorMetrics
from rayscale.operator.rayjob_controller import RayJobController, RayJobSettings
from rayscale.operator.rayservice_controller import RayServiceController, RayServiceSettings
from rayscale.operator.rbac import ensure_autoscaler_rbac, use_autoscaler_account
from rayscale.operator.reconcile import ObservedPod, conditions, head_ready, reconcile
from rayscale.operator.watch import (
    Informer,
    Obj,
    ObjectCache,
    WorkQueue,
    own_key,
    serve_queue,
)
from rayscale.providers.kuberay import RayClusterResource
from rayscale.spec import SpecError, parse_cluster_spec

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
HOLD_AFTER_UNCERTAIN_CREATE_S = 5.0  # a create that may have succeeded: wait for the watch
# at most one status write per cluster in this time: pods that change within it (a burst
# of pods turning Running) share one write; an isolated change is written at once
STATUS_INTERVAL_S = 0.25
WATCH_SERVER_TIMEOUT_S = 300
COMPONENT = "rayscale-operator"
#: the API's answers to a pod create that mean it was refused and no pod exists
REFUSALS = frozenset({400, 403, 422})
STATUS_SELECTOR = ",".join(f"{k}={v}" for k, v in STATUS_LABELS.items())


@dataclass(frozen=True)
class SidecarSettings:
    """How the autoscaler sidecar runs: ``rayscale`` in the Ray image (or ``image``);
    on the dev cluster, whose pods are local processes, this Python's module."""

    command: list[str] = field(default_factory=lambda: ["rayscale"])
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class OperatorContext:
    client: Client
    settings: PodSettings
    metrics: OperatorMetrics
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    workers: int = DEFAULT_WORKERS
    said: dict[str, set[str]] = field(default_factory=dict)  # warnings already posted
    states: dict[str, str] = field(default_factory=dict)
    #: KubeRay's feature gates that are on (``RayCronJob``: the RayCronJob controller)
    feature_gates: frozenset[str] = frozenset()
    #: where clusters' histories go (``rayscale ui``); None: kept nowhere
    history: OperatorHistory | None = None


CONTEXT: OperatorContext | None = None
CONTROLLER: Controller | None = None
RAYJOBS: RayJobController | None = None
RAYSERVICES: RayServiceController | None = None


def _ctx() -> OperatorContext:
    assert CONTEXT is not None, "the operator context is set before kopf runs"
    return CONTEXT


def warm_up_decoders() -> None:
    """Compile lightkube's decoders on this thread before the workers' (see kubedecode)."""
    from lightkube.resources.core_v1 import ServiceAccount
    from lightkube.resources.rbac_authorization_v1 import RoleBinding

    warm_up((Pod, Service, Secret, Event, ServiceAccount, RoleBinding, RayClusterResource,
             RayClusterResource.Status))


@kopf.on.login()
def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG (client certificates included)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    settings.scanning.disabled = True  # kopf watches nothing (not even CRDs): the informers do
    global CONTROLLER
    CONTROLLER = Controller(_ctx())
    CONTROLLER.start()
    global RAYJOBS
    ctx = _ctx()  # RayJobs: the submitter runs this Python where pods are local processes
    RAYJOBS = RayJobController(ctx.client, RayJobSettings(
        pods=ctx.settings, namespaces=tuple(ctx.namespaces),
        python=sys.executable if ctx.settings.shared_network else "python"), ctx.metrics,
        history=ctx.history)
    RAYJOBS.start()
    global RAYSERVICES
    RAYSERVICES = RayServiceController(ctx.client, RayServiceSettings(
        pods=ctx.settings, namespaces=tuple(ctx.namespaces)))
    RAYSERVICES.start()


@kopf.on.cleanup()
def _stop(**_: Any) -> None:
    if CONTROLLER is not None:
        CONTROLLER.stop()
    if RAYJOBS is not None:
        RAYJOBS.stop()
    if RAYSERVICES is not None:
        RAYSERVICES.stop()


# ------------------------------------------------------------------ controller


def cluster_key_of(obj: Obj) -> str | None:
    """The ``namespace/name`` of the RayCluster an owned object belongs to (its label)."""
    meta = obj.get("metadata") or {}
    cluster = (meta.get("labels") or {}).get(CLUSTER_LABEL)
    return f"{meta.get('namespace')}/{cluster}" if cluster else None



def _observed(pod: Obj | None) -> ObservedPod | None:
    return ObservedPod.from_pod(pod) if pod is not None else None


class Controller:
    """Informers, caches, the work queue and the workers that reconcile from them."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.queue = WorkQueue()
        self.clusters = ObjectCache(index=own_key, on_change=self._cluster_changed)
        self.pods = ObjectCache(index=cluster_key_of, on_change=self._pod_changed)
        self.services = ObjectCache(index=cluster_key_of, on_change=self._service_changed)
        # metadata only: the operator never holds a token after it has written one
        self.secrets = ObjectCache(index=cluster_key_of, on_change=self._secret_changed)
        # the sidecars' status ConfigMaps, only for the history
        self.status_maps = ObjectCache(index=cluster_key_of, on_change=self._status_changed)
        self.failures: dict[str, int] = {}
        self.holds: dict[str, float] = {}  # key -> monotonic time before which not to act
        self.status_written: dict[str, float] = {}  # key -> monotonic time of the last patch
        self.status_interval_s = STATUS_INTERVAL_S
        self.foreign_services: set[tuple[str, str]] = set()  # exist, but not labelled ours
        self.foreign_secrets: set[tuple[str, str]] = set()  # the same, for token Secrets
        self.informers: list[Informer] = []
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._states_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, ctx.workers),
                                        thread_name_prefix="create")
        self._http: httpx.Client | None = None
        self.gated_stops: list[Callable[[], None]] = []  # controllers behind feature gates
        # GCS fault tolerance: the Redis cleanup finalizer and Job, the Redis probe
        self.gcs_ft = GcsFtWiring(ctx.client, ctx.settings, self.pods.indexed,
                                  self.clusters.upsert, self.queue.add_after,
                                  lambda body, kind, reason, message: _post_event(
                                      ctx, body, kind, reason, message))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        count = count_requests(self.ctx.metrics)
        _instrument(self.ctx.client, count)
        self._http = client_adapter.Client(
            self.ctx.client.config,
            client_adapter.ConnectionParams(timeout=httpx.Timeout(10.0)),
        )
        self._http.event_hooks = {"request": [count], "response": []}
        kinds = [
            ("rayclusters", self.clusters, "apis/ray.io/v1", "rayclusters", None,
             "ray.io/v1", "RayCluster"),
            ("pods", self.pods, "api/v1", "pods", CLUSTER_LABEL, "v1", "Pod"),
            ("services", self.services, "api/v1", "services", CLUSTER_LABEL, "v1", "Service"),
            ("secrets", self.secrets, "api/v1", "secrets", CLUSTER_LABEL, "v1", "Secret"),
        ]
        if self.ctx.history is not None:
            kinds.append(("configmaps", self.status_maps, "api/v1", "configmaps",
                          STATUS_SELECTOR, "v1", "ConfigMap"))
        for name, cache, prefix, plural, selector, api_version, kind in kinds:
            scopes: list[str | None] = list(self.ctx.namespaces) or [None]
            for ns in scopes:
                self.informers.append(Informer(
                    name=f"{name}@{ns or '*'}", http=self._http, cache=cache,
                    all_path=f"{prefix}/{plural}", path=f"{prefix}/namespaces/{{ns}}/{plural}",
                    namespace=ns, label_selector=selector,
                    server_timeout_s=WATCH_SERVER_TIMEOUT_S, api_version=api_version, kind=kind,
                    metadata_only=cache is self.secrets,
                ))
        for informer in self.informers:
            informer.start()
        if self.ctx.history is not None:
            threading.Thread(target=self._sweep_history, name="history-sweep",
                             daemon=True).start()
        if "RayCronJob" in self.ctx.feature_gates:  # its own informers, queue and workers
            from rayscale.operator.raycronjob import RayCronJobController  # only when on

            cronjobs = RayCronJobController(self._http, self.ctx.namespaces)
            cronjobs.start()
            self.gated_stops.append(cronjobs.stop)
        for index in range(max(1, self.ctx.workers)):
            worker = threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _sweep_history(self) -> None:
        """Once the RayClusters are listed: mark gone, in the history, those deleted while
        no operator ran."""
        listing = [i for i in self.informers if i.name.startswith("rayclusters@")]
        while not all(i.synced.wait(timeout=1.0) for i in listing):
            if self._stopping.is_set():
                return
        live = {str((self.clusters.get(ns, name) or {}).get("metadata", {}).get("uid"))
                for ns, name in self.clusters.all_keys()}
        assert self.ctx.history is not None
        gone = self.ctx.history.sweep_gone(live, list(self.ctx.namespaces))
        if gone:
            log.info("history: %d RayCluster(s) deleted while no operator ran marked gone", gone)

    def stop(self) -> None:
        """Stop promptly: reconciles in flight may finish (a few seconds at most); the
        informers' threads, blocked reading a watch, are daemons and end with the process."""
        self._stopping.set()
        self.queue.shutdown()
        for stop in self.gated_stops:
            stop()
        for informer in self.informers:
            informer.stop(wait_s=0.0)
        deadline = time.monotonic() + 5.0
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    # ------------------------------------------------------------- triggers

    def _cluster_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None:
            self.queue.add(key)
        if self.ctx.history is not None:
            self.ctx.history.cluster_changed(old, new)

    def _status_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if self.ctx.history is not None:
            self.ctx.history.status_changed(new)

    def _pod_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None and _observed(old) != _observed(new):
            self.queue.add(key)

    def _service_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None and new is None:  # deleted: recreate it
            self.queue.add(key)

    def _secret_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None and new is None:  # deleted: recreate it (a new token, as KubeRay)
            self.queue.add(key)

    # --------------------------------------------------------------- workers

    def _work(self) -> None:
        serve_queue(self.informers, self.queue, self._stopping, self.process)

    def process(self, key: str) -> None:
        ctx = self.ctx
        ns, name = key.split("/", 1)
        body = self.clusters.get(ns, name)
        if body is None:  # deleted: forget it
            ctx.said.pop(key, None)
            self.failures.pop(key, None)
            self.holds.pop(key, None)
            self.status_written.pop(key, None)
            self.gcs_ft.forget(key)
            self._set_state(key, None)
            ctx.metrics.forget_cluster(ns, name)
            return
        hold = self.holds.get(key)
        if hold is not None:
            if hold > time.monotonic():
                self.queue.add_after(key, hold - time.monotonic())
                return
            del self.holds[key]
        started = time.perf_counter()
        try:
            self._reconcile(body)
            self.failures.pop(key, None)
        except Exception as exc:
            ctx.metrics.errors.inc()
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
            if isinstance(exc, ApiError | httpx.HTTPError):
                log.warning("reconcile of %s failed (retry in %.1f s): %s", key, delay, exc)
            else:
                log.exception("reconcile of %s failed (retry in %.1f s)", key, delay)
            self.queue.add_after(key, delay)
        finally:
            ctx.metrics.reconciles.inc()
            ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    # ------------------------------------------------------------- reconcile

    def _reconcile(self, body: dict[str, Any]) -> None:
        ctx = self.ctx
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        if left_to_another(body, "RayCluster", ctx.said):  # as KubeRay: MultiKueue's
            return
        try:
            # the status is this operator's output, not its input: an old or foreign one
            # that the typed model rejects must not fail the cluster
            spec = parse_cluster_spec({k: v for k, v in body.items() if k != "status"})
            refused = gcs_ft.operator_problems(spec)  # the embedded GCS store: not here yet
            if refused:
                raise SpecError(refused)
        except SpecError as exc:
            if self.gcs_ft.deletion(body, None):  # deleting: only our finalizer to drop
                return
            # KubeRay's reason; like KubeRay, nothing is created for an invalid spec. The
            # status first: whoever sees the event can then read the failed state.
            failed = {"state": "failed", "reason": str(exc)[:1000]}
            if any((body.get("status") or {}).get(k) != v for k, v in failed.items()):
                self._patch_status(body, failed)
            _say_once(ctx, body, "Warning", "InvalidRayClusterSpec", str(exc))
            self._set_state(key, "failed")
            _cluster_metrics(ctx.metrics, body, [])
            return
        if self.gcs_ft.deletion(body, spec):  # deleting (the Redis cleanup, if any)
            return
        owner = {
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "name": name, "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True,
        }
        self._ensure_auth_secret(spec, owner, key)  # before the pods that read it
        self._ensure_service(head_service(spec, ctx.settings), owner, ns)
        if spec.spec.enable_in_tree_autoscaling:  # the sidecar's ServiceAccount and RoleBinding
            ensure_autoscaler_rbac(ctx.client, body, owner)
        observed = [ObservedPod.from_pod(p) for p in self.pods.indexed(key)]
        actions = reconcile(spec, observed, ctx.settings)
        # GCS FT: is Redis there? (its Warning Event; a refused password withholds the head)
        redis, withheld = self.gcs_ft.redis_check(body, spec, observed, actions.create)

        for manifest in actions.create:
            manifest["metadata"]["namespace"] = ns
            manifest["metadata"]["ownerReferences"] = [owner]
            if manifest["metadata"]["labels"].get(NODE_TYPE_LABEL) == NODE_TYPE_HEAD:
                _add_autoscaler_sidecar(manifest, spec, ctx.sidecar,
                                        gcs_port(spec, ctx.settings))
                if spec.spec.enable_in_tree_autoscaling:
                    use_autoscaler_account(manifest, spec.name)
            auth.name_service_account(manifest["spec"], spec)
        # at once, on the shared pool: one cluster's pods do not wait for each other, and
        # creates of all clusters together are as many at a time as there are workers
        creates = [self._pool.submit(self._create_pod, key, m, ns) for m in actions.create]
        wait(creates)  # all of them, failed or not: none may still be in flight after this
        for manifest, create in zip(actions.create, creates, strict=True):
            refusal = create.exception()
            # refused for good (a quota, an admission webhook, an invalid pod): not a
            # timeout or a 5xx, after which the pod may exist, nor a conflict
            if isinstance(refusal, ApiError) and refusal.status.code in REFUSALS:
                _post_create_failure(ctx, body, manifest, refusal)
        for create in creates:
            error = create.exception()
            if error is not None:
                raise error
        for pod_name in actions.delete:
            try:
                ctx.client.delete(Pod, pod_name, namespace=ns)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            self.pods.mark_deleting(ns, pod_name)
            ctx.metrics.pods_deleted.inc()
        changed = bool(actions.create or actions.delete)
        for event in actions.events:
            if changed or event.type == "Warning":
                _say_once(ctx, body, event.type, event.reason, event.message, always=changed)
        status = dict(actions.status)
        if changed:  # the status of the pods as they are now, created and deleted ones included
            observed = [ObservedPod.from_pod(p) for p in self.pods.indexed(key)]
            status = dict(reconcile(spec, observed, ctx.settings).status)
        if not status.get("state"):
            # unset while provisioning, as KubeRay leaves it: null removes it in a merge patch
            # ("" is not a state, and the typed model, the sidecar's included, rejects it)
            status["state"] = None
        status["observedGeneration"] = meta.get("generation")
        status["endpoints"] = {n: str(p) for n, p in head_ports(spec, ctx.settings).items()}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        previous = (body.get("status") or {}).get("conditions") or []
        status["conditions"] = redis_conditions(
            conditions(status, spec.spec.suspend, previous, now, head_ready(observed)),
            redis, withheld, previous, now)
        _cluster_metrics(ctx.metrics, body, status["conditions"])
        old = {k: v for k, v in (body.get("status") or {}).items() if k != "lastUpdateTime"}
        if {k: v for k, v in status.items()} != {k: old.get(k) for k in status}:
            due_in = self.status_interval_s - (time.monotonic()
                                               - self.status_written.get(key, -1e9))
            if status.get("state") != old.get("state"):
                due_in = 0.0  # ready, suspended, failed: written at once
            if due_in > 0:  # pods changing one after another: one write for several of them
                self.queue.add_after(key, due_in)
            else:
                status["lastUpdateTime"] = now
                self._patch_status(body, status)
                self.status_written[key] = time.monotonic()
        self._set_state(key, status.get("state") or "provisioning")

    def _set_state(self, key: str, state: str | None) -> None:
        with self._states_lock:
            if state is None:
                self.ctx.states.pop(key, None)
            else:
                self.ctx.states[key] = state
            self.ctx.metrics.set_states(self.ctx.states)

    def _create_pod(self, key: str, manifest: dict[str, Any], ns: str) -> None:
        try:
            created = self.ctx.client.create(cast(Pod, Pod.from_dict(manifest)), namespace=ns)
        except ApiError as exc:
            if exc.status.code is None or exc.status.code >= 500:
                self._hold(key)
            raise
        except httpx.TransportError:
            self._hold(key)
            raise
        # counted from now on, whatever the watch has delivered yet
        self.pods.upsert(created.to_dict())
        self.ctx.metrics.pods_created.inc()

    def _hold(self, key: str) -> None:
        """A create failed in a way that may still have created the pod: act on this
        cluster again only once the watch has had time to report it."""
        self.holds[key] = time.monotonic() + HOLD_AFTER_UNCERTAIN_CREATE_S

    def _ensure_service(self, manifest: dict[str, Any], owner: dict[str, Any], ns: str) -> None:
        name = manifest["metadata"]["name"]
        if self.services.get(ns, name) is not None or (ns, name) in self.foreign_services:
            return
        manifest["metadata"]["ownerReferences"] = [owner]
        try:
            created = self.ctx.client.create(cast(Service, Service.from_dict(manifest)),
                                              namespace=ns)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            self.foreign_services.add((ns, name))  # exists without our label: leave it
            return
        self.services.upsert(created.to_dict())

    def _ensure_auth_secret(self, spec: RayCluster, owner: dict[str, Any], key: str) -> None:
        """The cluster's token Secret, created once if missing; never updated or rotated.

        The token goes to the API server and nowhere else: not into the cache (which
        holds Secrets' metadata only), a log line or an Event.
        """
        name = auth.generated_secret_name(spec)
        ns = spec.namespace
        if name is None or self.secrets.get(ns, name) is not None \
                or (ns, name) in self.foreign_secrets:
            return
        manifest = auth.secret_manifest(spec, owner, auth.new_token())
        try:
            created = self.ctx.client.create(cast(Secret, Secret.from_dict(manifest)),
                                             namespace=ns)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            # exists without our label (made by its user, say): used as it is, as KubeRay does
            self.foreign_secrets.add((ns, name))
            return
        meta = created.metadata
        assert meta is not None
        self.secrets.upsert({"apiVersion": "v1", "kind": "Secret",
                             "metadata": meta.to_dict()})
        log.info("%s: created Secret %s/%s (Ray auth token, key %s)", key, ns, name,
                 auth.TOKEN_KEY)

    def _patch_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        meta = body["metadata"]
        patched = self.ctx.client.patch(RayClusterResource.Status, meta["name"], {"status": status},
                                        namespace=meta["namespace"],
                                        patch_type=PatchType.MERGE)
        # the next reconcile compares with what was written, not with an older event
        self.clusters.upsert(patched.to_dict())  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- API requests


def count_requests(metrics: OperatorMetrics) -> Callable[[httpx.Request], None]:
    """An httpx request hook counting every API request by verb and resource."""

    def hook(request: httpx.Request) -> None:
        verb, resource = classify_request(request.method, request.url.path,
                                          dict(request.url.params))
        metrics.api_requests.labels(verb, resource).inc()

    return hook


def classify_request(method: str, path: str, params: dict[str, str]) -> tuple[str, str]:
    """(verb, resource) of an API request, as the API server's metrics name them."""
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) > 2 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = (rest[0] if rest else "") + (f"/{rest[2]}" if len(rest) > 2 else "")
    if method == "GET":
        verb = "watch" if params.get("watch") in ("true", "1") else (
            "get" if len(rest) > 1 else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete"}.get(method, method.lower())
    return verb, resource


def _instrument(client: Client, hook: Callable[[httpx.Request], None]) -> None:
    """Count the lightkube client's requests too (its httpx client is not public)."""
    http = getattr(getattr(client, "_client", None), "_client", None)
    if isinstance(http, httpx.Client):
        hooks = http.event_hooks
        if hook not in hooks.get("request", []):
            http.event_hooks = {**hooks, "request": [*hooks.get("request", []), hook]}


# --------------------------------------------------------------------- events


#: Normal reasons posted as Events (rare, and what a user checks for after an outage).
_POSTED_NORMAL = frozenset({"CreatedHeadPod"})


def _say_once(ctx: OperatorContext, body: dict[str, Any], kind: str, reason: str, message: str,
              always: bool = False) -> None:
    """Post a Warning Event, the same one once per cluster; Normal ones are only logged
    (as kopf's posting level WARNING did before), except the rare ones a user looks for
    (_POSTED_NORMAL: a head replaced with GCS fault tolerance)."""
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    seen = ctx.said.setdefault(key, set())
    if not always and message in seen:
        return
    seen.add(message)
    if kind != "Warning" and reason not in _POSTED_NORMAL:
        log.info("%s: %s: %s", key, reason, message)
        return
    _post_event(ctx, body, kind, reason, message)


def _post_create_failure(ctx: OperatorContext, body: dict[str, Any], manifest: dict[str, Any],
                         error: ApiError) -> None:
    """KubeRay's Warning ``FailedToCreateHeadPod`` / ``FailedToCreateWorkerPod`` for a pod the
    API refused (a quota, an admission webhook). A worker's names its group in
    ``involvedObject.fieldPath`` (``spec.workerGroupSpecs{GROUP}``): the sidecar looks for
    it to back that group off at once (providers/kuberay.py)."""
    labels = manifest["metadata"].get("labels") or {}
    head = labels.get(NODE_TYPE_LABEL) == NODE_TYPE_HEAD
    meta = body["metadata"]
    name = manifest["metadata"].get("name") or manifest["metadata"].get("generateName", "")
    what = "head" if head else "worker"
    event = event_manifest(body, "RayCluster", "Warning",
                           "FailedToCreateHeadPod" if head else "FailedToCreateWorkerPod",
                           f"Failed to create {what} Pod {meta['namespace']}/{name}, "
                           f"{error.status.message or error}", COMPONENT)
    if not head:
        event["involvedObject"]["fieldPath"] = \
            f"spec.workerGroupSpecs{{{labels.get(GROUP_LABEL_K8S, '')}}}"
    try:
        ctx.client.create(cast(Event, Event.from_dict(event)), namespace=meta["namespace"])
    except (ApiError, httpx.HTTPError) as exc:  # events help; they never fail a reconcile
        log.warning("could not post event %s: %s", event["reason"], exc)


def _post_event(ctx: OperatorContext, body: dict[str, Any], kind: str, reason: str,
                message: str) -> None:
    meta = body["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    event = event_manifest(body, "RayCluster", kind, reason, message, COMPONENT)
    try:
        ctx.client.create(cast(Event, Event.from_dict(event)), namespace=meta["namespace"])
    except (ApiError, httpx.HTTPError) as exc:  # events help; they never fail a reconcile
        log.warning("could not post event %s on %s: %s", reason, key, exc)


def _cluster_metrics(metrics: OperatorMetrics, body: dict[str, Any],
                     conds: list[dict[str, Any]]) -> None:
    """KubeRay's RayCluster series: the cluster, its RayClusterProvisioned condition and,
    once true, the seconds from its creation to then."""
    meta = body["metadata"]
    owner = (meta.get("labels") or {}).get(ORIGIN_CRD_LABEL) or "None"
    provisioned = next((c for c in conds if c.get("type") == "RayClusterProvisioned"
                        and c.get("status") == "True"), None)
    after = None
    if provisioned is not None:
        created, since = _timestamp(meta.get("creationTimestamp")), _timestamp(
            provisioned.get("lastTransitionTime"))
        if created is not None and since is not None:
            after = max(0.0, since - created)
    metrics.set_cluster(meta["namespace"], meta["name"], meta.get("uid", ""), owner,
                        provisioned is not None, after)


def _timestamp(value: Any) -> float | None:
    """An RFC 3339 time of the API (``2026-01-02T03:04:05Z``) as epoch seconds."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _add_autoscaler_sidecar(pod: dict[str, Any], spec: RayCluster, sidecar: SidecarSettings,
                            port: int) -> None:
    if not spec.spec.enable_in_tree_autoscaling:
        return
    metrics_port, declared = _sidecar_metrics_port(pod)
    command = [*sidecar.command, "autoscaler", "--cluster", spec.name,
               "--namespace", spec.namespace, "--gcs-address", f"$(POD_IP):{port}",
               "--metrics-port", str(metrics_port)]
    sidecar_env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in sorted(sidecar.env.items())
    ]
    sidecar_env.append({"name": "POD_IP",
                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    container: dict[str, Any] = {
        "name": "autoscaler",
        "image": sidecar.image or pod["spec"]["containers"][0].get("image", "rayscale"),
        "command": command,
        "env": sidecar_env,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    }
    if not declared:  # Prometheus (the chart's PodMonitor, KubeRay's) finds it by name
        container["ports"] = [{"name": AUTOSCALER_METRICS_PORT_NAME,
                               "containerPort": metrics_port, "protocol": "TCP"}]
    # its GCS client and its dashboard requests authenticate as the Ray containers do
    auth.sidecar_auth(container, spec)
    _merge_autoscaler_options(container, spec.spec.autoscaler_options)
    pod["spec"]["containers"].append(container)


def _sidecar_metrics_port(pod: dict[str, Any]) -> tuple[int, bool]:
    """The port of the sidecar's /metrics, and whether a container of the pod already
    declares it by name: KubeRay's samples give the Ray container ``as-metrics``
    (44217, for Ray's own autoscaler, which rayscale's heads do not run); the sidecar
    then serves on that number, and the name stays the Ray container's."""
    for container in pod["spec"]["containers"]:
        for declared in container.get("ports") or []:
            if declared.get("name") == AUTOSCALER_METRICS_PORT_NAME:
                return int(declared["containerPort"]), True
    return AUTOSCALER_METRICS_PORT, False


def _merge_autoscaler_options(container: dict[str, Any], options: AutoscalerOptions) -> None:
    """``autoscalerOptions`` overrides on the sidecar, as KubeRay's mergeAutoscalerOverrides.

    Resources, image, pull policy, security context, command and args replace
    ours; env, envFrom and volume mounts are appended (a later env entry wins).
    """
    opts = options.to_manifest()
    for key in ("resources", "image", "imagePullPolicy", "securityContext", "command", "args"):
        if opts.get(key):
            container[key] = opts[key]
    for key in ("env", "envFrom", "volumeMounts"):
        if opts.get(key):
            container[key] = [*(container.get(key) or []), *opts[key]]
