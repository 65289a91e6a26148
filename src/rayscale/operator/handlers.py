"""kopf handlers: watch RayClusters, observe their pods, apply the reconcile decision.

Every RayCluster is reconciled on create/update/resume and on a short timer
(pod failures, workersToDelete processed), always from a fresh list of its
pods, so a restarted operator converges without duplicates. Owned objects
carry owner references: deleting the RayCluster lets Kubernetes' garbage
collector remove them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod, Service
from lightkube.types import PatchType

from rayscale.kubedecode import warm_up
from rayscale.labels import CLUSTER_LABEL, NODE_TYPE_HEAD, NODE_TYPE_LABEL
from rayscale.operator.desired import (
    PodSettings,
    gcs_port,
    head_ports,
    head_service,
)
from rayscale.operator.metrics import OperatorMetrics
from rayscale.operator.rbac import ensure_autoscaler_rbac, use_autoscaler_account
from rayscale.operator.reconcile import ObservedPod, conditions, reconcile
from rayscale.providers.kuberay import RayClusterResource
from rayscale.spec import SpecError, parse_cluster_spec

log = logging.getLogger(__name__)



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
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    said: dict[str, set[str]] = field(default_factory=dict)  # warnings already posted
    states: dict[str, str] = field(default_factory=dict)


CONTEXT: OperatorContext | None = None


def _ctx() -> OperatorContext:
    assert CONTEXT is not None, "the operator context is set before kopf runs"
    return CONTEXT


def warm_up_decoders() -> None:
    """Compile lightkube's decoders on this thread before kopf's workers (see kubedecode)."""
    from lightkube.resources.core_v1 import ServiceAccount
    from lightkube.resources.rbac_authorization_v1 import RoleBinding

    warm_up((Pod, Service, ServiceAccount, RoleBinding, RayClusterResource,
             RayClusterResource.Status))


@kopf.on.login()
def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG (client certificates included)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rayscale.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="rayscale.io", key="last-handled-configuration"
    )


@kopf.on.resume("ray.io", "v1", "rayclusters")
@kopf.on.create("ray.io", "v1", "rayclusters")
@kopf.on.update("ray.io", "v1", "rayclusters")
def _on_change(body: kopf.Body, **_: Any) -> None:
    reconcile_cluster(dict(body))


@kopf.timer("ray.io", "v1", "rayclusters", interval=1.0, sharp=False)
def _periodic(body: kopf.Body, **_: Any) -> None:
    reconcile_cluster(dict(body))


@kopf.on.delete("ray.io", "v1", "rayclusters", optional=True)
def _on_delete(body: kopf.Body, **_: Any) -> None:
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    ctx = _ctx()
    ctx.states.pop(key, None)
    ctx.metrics.set_states(ctx.states)


def reconcile_cluster(body: dict[str, Any]) -> None:
    ctx = _ctx()
    meta = body["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    lock = ctx.locks.setdefault(key, threading.Lock())
    with lock:
        started = time.perf_counter()
        try:
            _reconcile_locked(ctx, body)
        except ApiError as exc:
            ctx.metrics.errors.inc()
            log.warning("reconcile of %s failed: %s", key, exc)
        finally:
            ctx.metrics.reconciles.inc()
            ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)


def _reconcile_locked(ctx: OperatorContext, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    key = f"{ns}/{name}"
    try:
        spec = parse_cluster_spec(body)
    except SpecError as exc:
        _say_once(ctx, body, "Warning", "InvalidSpec", str(exc))
        _patch_status(ctx, body, {"state": "failed", "reason": str(exc)[:1000]})
        ctx.states[key] = "failed"
        ctx.metrics.set_states(ctx.states)
        return
    owner = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "name": name, "uid": meta["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }
    _ensure_service(ctx, head_service(spec, ctx.settings), owner, ns)
    if spec.spec.enable_in_tree_autoscaling:  # the sidecar's ServiceAccount and RoleBinding
        ensure_autoscaler_rbac(ctx.client, body, owner)
    pods = [p.to_dict() for p in ctx.client.list(Pod, namespace=ns, labels={CLUSTER_LABEL: name})]
    observed = [ObservedPod.from_pod(p) for p in pods]
    actions = reconcile(spec, observed, ctx.settings)

    for manifest in actions.create:
        manifest["metadata"]["namespace"] = ns
        manifest["metadata"]["ownerReferences"] = [owner]
        if manifest["metadata"]["labels"].get(NODE_TYPE_LABEL) == NODE_TYPE_HEAD:
            _add_autoscaler_sidecar(manifest, spec.name, ns, ctx.sidecar,
                                    spec.spec.enable_in_tree_autoscaling,
                                    gcs_port(spec, ctx.settings))
            if spec.spec.enable_in_tree_autoscaling:
                use_autoscaler_account(manifest, spec.name)
        ctx.client.create(cast(Pod, Pod.from_dict(manifest)), namespace=ns)
    for pod_name in actions.delete:
        try:
            ctx.client.delete(Pod, pod_name, namespace=ns)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
    changed = bool(actions.create or actions.delete)
    for event in actions.events:
        if changed or event.type == "Warning":
            _say_once(ctx, body, event.type, event.reason, event.message, always=changed)
    status = dict(actions.status)
    status["observedGeneration"] = meta.get("generation")
    status["endpoints"] = {n: str(p) for n, p in head_ports(spec, ctx.settings).items()}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = (body.get("status") or {}).get("conditions") or []
    status["conditions"] = conditions(status, spec.spec.suspend, previous, now)
    old = {k: v for k, v in (body.get("status") or {}).items() if k != "lastUpdateTime"}
    if {k: v for k, v in status.items()} != {k: old.get(k) for k in status}:
        status["lastUpdateTime"] = now
        _patch_status(ctx, body, status)
    ctx.states[key] = status.get("state") or "provisioning"
    ctx.metrics.set_states(ctx.states)


def _ensure_service(ctx: OperatorContext, manifest: dict[str, Any], owner: dict[str, Any],
                    ns: str) -> None:
    try:
        ctx.client.get(Service, manifest["metadata"]["name"], namespace=ns)
        return
    except ApiError as exc:
        if exc.status.code != 404:
            raise
    manifest["metadata"]["ownerReferences"] = [owner]
    ctx.client.create(cast(Service, Service.from_dict(manifest)), namespace=ns)


def _patch_status(ctx: OperatorContext, body: dict[str, Any], status: dict[str, Any]) -> None:
    meta = body["metadata"]
    ctx.client.patch(RayClusterResource.Status, meta["name"], {"status": status},
                     namespace=meta["namespace"], patch_type=PatchType.MERGE)


def _say_once(ctx: OperatorContext, body: dict[str, Any], kind: str, reason: str, message: str,
              always: bool = False) -> None:
    """Post a Kubernetes Event; the same warning only once per cluster (the timer repeats)."""
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    seen = ctx.said.setdefault(key, set())
    if not always and message in seen:
        return
    seen.add(message)
    post = kopf.warn if kind == "Warning" else kopf.info
    post(cast(kopf.Body, body), reason=reason, message=message)


def _add_autoscaler_sidecar(pod: dict[str, Any], cluster: str, ns: str, sidecar: SidecarSettings,
                            enabled: bool, port: int) -> None:
    if not enabled:
        return
    command = [*sidecar.command, "autoscaler", "--cluster", cluster, "--namespace", ns,
               "--gcs-address", f"$(POD_IP):{port}"]
    sidecar_env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in sorted(sidecar.env.items())
    ]
    sidecar_env.append({"name": "POD_IP",
                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    pod["spec"]["containers"].append({
        "name": "autoscaler",
        "image": sidecar.image or pod["spec"]["containers"][0].get("image", "rayscale"),
        "command": command,
        "env": sidecar_env,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    })
