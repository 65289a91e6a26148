"""The autoscaler sidecar's identity: a ServiceAccount and a RoleBinding per RayCluster.

With ``enableInTreeAutoscaling`` the head pod carries the autoscaler sidecar,
which reads the RayCluster and its pods and patches the RayCluster (see
:mod:`rayscale.providers.kuberay`). On a real cluster it does so with the head
pod's service account token. For each such RayCluster the operator ensures, in
the cluster's namespace:

- a ServiceAccount ``<cluster>-autoscaler`` (unless the head pod template names
  its own ``serviceAccountName``: then that account is used and not created);
- a RoleBinding ``<cluster>-autoscaler`` granting the ClusterRole
  ``rayscale-autoscaler`` (installed by the Helm chart; rayclusters
  get/list/watch/patch/update, pods get/list/watch) to that account, in this
  namespace only.

Both are owned by the RayCluster, so deleting it removes them. The sidecar
needs no access to Secrets: with Ray token auth (``authOptions``) the kubelet
gives it the token through a ``secretKeyRef`` (see
:mod:`rayscale.operator.auth`); the operator's own Secret rights are the Helm
chart's. Creating the
RoleBinding needs the ``bind`` verb on that ClusterRole, which the chart grants
the operator for this one role name (``RAYSCALE_AUTOSCALER_CLUSTER_ROLE``
overrides the name, and the chart sets it from its values).

Idempotent: get, create on 404; a 409 from a concurrent create is fine. An
existing object is left as it is (the operator never takes over a
ServiceAccount or RoleBinding somebody else made). Verified objects are
remembered per RayCluster uid for :data:`RECHECK_S` seconds so the one-second
reconcile timer does not turn into two GETs per cluster per second.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, cast

from lightkube import ApiError, Client
from lightkube.resources.core_v1 import ServiceAccount
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from rayscale.labels import CLUSTER_LABEL

DEFAULT_CLUSTER_ROLE = "rayscale-autoscaler"
CLUSTER_ROLE_ENV = "RAYSCALE_AUTOSCALER_CLUSTER_ROLE"
RECHECK_S = 60.0
LABELS = {"app.kubernetes.io/created-by": "rayscale", "app.kubernetes.io/component": "autoscaler"}

_verified: dict[str, float] = {}  # RayCluster uid -> monotonic time of the last check
_verified_lock = threading.Lock()


def autoscaler_cluster_role() -> str:
    return os.environ.get(CLUSTER_ROLE_ENV) or DEFAULT_CLUSTER_ROLE


def autoscaler_account_name(cluster: str) -> str:
    return f"{cluster}-autoscaler"


def user_service_account(body: dict[str, Any]) -> str | None:
    """The head pod template's own ``serviceAccountName``, if it sets one."""
    template = (body.get("spec", {}).get("headGroupSpec", {}).get("template") or {})
    name = (template.get("spec") or {}).get("serviceAccountName")
    return str(name) if name else None


def head_service_account(body: dict[str, Any]) -> str:
    """The account the head pod (and so the sidecar) runs as."""
    return user_service_account(body) or autoscaler_account_name(body["metadata"]["name"])


def use_autoscaler_account(pod: dict[str, Any], cluster: str) -> None:
    """Run a head pod manifest as ``<cluster>-autoscaler`` unless it names an account."""
    spec = pod.setdefault("spec", {})
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = autoscaler_account_name(cluster)


def service_account_manifest(body: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": autoscaler_account_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {**LABELS, CLUSTER_LABEL: meta["name"]},
            "ownerReferences": [owner],
        },
    }


def role_binding_manifest(body: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": autoscaler_account_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {**LABELS, CLUSTER_LABEL: meta["name"]},
            "ownerReferences": [owner],
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": autoscaler_cluster_role(),
        },
        "subjects": [{
            "kind": "ServiceAccount",
            "name": head_service_account(body),
            "namespace": meta["namespace"],
        }],
    }


def ensure_autoscaler_rbac(client: Client, body: dict[str, Any], owner: dict[str, Any],
                           *, force: bool = False) -> list[str]:
    """Ensure the sidecar's ServiceAccount and RoleBinding; return the kinds created."""
    meta = body["metadata"]
    uid = str(meta.get("uid") or f"{meta['namespace']}/{meta['name']}")
    now = time.monotonic()
    with _verified_lock:
        if not force and now - _verified.get(uid, -RECHECK_S) < RECHECK_S:
            return []
    ns = meta["namespace"]
    created = []
    if user_service_account(body) is None:
        account = service_account_manifest(body, owner)
        if _create_if_missing(client, ServiceAccount, account, ns):
            created.append("ServiceAccount")
    if _create_if_missing(client, RoleBinding, role_binding_manifest(body, owner), ns):
        created.append("RoleBinding")
    with _verified_lock:
        _verified[uid] = now
        for stale in [k for k, t in _verified.items() if now - t > 10 * RECHECK_S]:
            del _verified[stale]
    return created


def _create_if_missing(client: Client, kind: Any, manifest: dict[str, Any], ns: str) -> bool:
    name = manifest["metadata"]["name"]
    try:
        client.get(kind, name, namespace=ns)
        return False
    except ApiError as exc:
        if exc.status.code != 404:
            raise
    try:
        client.create(cast(Any, kind.from_dict(manifest)), namespace=ns)
    except ApiError as exc:
        if exc.status.code != 409:  # created meanwhile by another reconcile: fine
            raise
        return False
    return True
