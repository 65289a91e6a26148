"""Ray token authentication on Kubernetes (``spec.authOptions``), the way KubeRay v1.7 does it.

Pure: manifests and container changes, no API calls (the handlers create the
Secret). With ``authOptions.mode: token``:

- **A shared token** (the default): the operator creates, once, a Secret named
  like the cluster (:func:`secret_name`, KubeRay's ``CheckName``) with one key,
  ``auth_token``: 32 random bytes, base64 (44 characters), labelled
  ``ray.io/cluster`` and owned by the RayCluster (deleted with it). It is never
  updated or rotated; an existing Secret of that name is left alone. With
  ``authOptions.secretName`` the user's Secret is used and none is created.
  Every Ray container, ``wait-gcs-ready`` init container and the autoscaler
  sidecar gets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from a
  ``secretKeyRef``: the token itself is never in a pod spec.
- **Kubernetes tokens** (``enableK8sTokenAuth: true``): no Secret; the same
  containers get ``RAY_AUTH_MODE=token``, ``RAY_ENABLE_K8S_TOKEN_AUTH=true`` and
  the pod's projected ServiceAccount token mounted read-only at
  ``/var/run/secrets/ray.io/serviceaccount`` (volume ``ray-token``). Ray checks
  tokens with TokenReview and SubjectAccessReview (verb ``ray:write`` on the
  RayCluster); the RBAC for that is the user's, as in KubeRay.

What a container sets itself wins: a variable or mount already there is
never replaced (KubeRay's manual-auth samples rely on it). Without
``mode: token``, Ray containers get ``RAY_AUTH_MODE=disabled`` unless they set
it (see :mod:`rayscale.operator.desired`).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from rayscale.api import RayCluster
from rayscale.labels import CLUSTER_LABEL

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
K8S_TOKEN_AUTH_ENV = "RAY_ENABLE_K8S_TOKEN_AUTH"
#: The Secret's one key (KubeRay's ``RAY_AUTH_TOKEN_SECRET_KEY``).
TOKEN_KEY = "auth_token"
TOKEN_BYTES = 32
TOKEN_VOLUME = "ray-token"
TOKEN_MOUNT_PATH = "/var/run/secrets/ray.io/serviceaccount"
#: KubeRay's init container that waits for the GCS; it gets the auth env too.
WAIT_GCS_READY = "wait-gcs-ready"
#: KubeRay's ``CheckName`` limit (room for "-head-"/"-worker-" and a suffix).
_NAME_MAX = 50


def check_name(name: str) -> str:
    """KubeRay's ``CheckName``: the last 50 characters; a leading digit or punctuation
    becomes ``r``."""
    if len(name) > _NAME_MAX:
        name = name[len(name) - _NAME_MAX:]
    if name and (name[0].isdigit() or not name[0].isalnum()):
        name = "r" + name[1:]
    return name


def token_auth(spec: RayCluster) -> bool:
    return spec.spec.token_auth


def k8s_token_auth(spec: RayCluster) -> bool:
    auth = spec.spec.auth_options
    return spec.spec.token_auth and auth is not None and auth.k8s_token_auth


def secret_name(spec: RayCluster) -> str | None:
    """The Secret the pods read the token from: ``secretName``, else the generated one;
    None without a shared token (auth off, or Kubernetes tokens)."""
    auth = spec.spec.auth_options
    if auth is None or not auth.token_auth or auth.k8s_token_auth:
        return None
    return auth.secret_name or check_name(spec.name)


def generated_secret_name(spec: RayCluster) -> str | None:
    """The Secret the operator creates (if missing): None with ``secretName``."""
    auth = spec.spec.auth_options
    if auth is None or auth.secret_name:
        return None
    return secret_name(spec)


def new_token() -> str:
    """KubeRay's token: 32 bytes from a CSPRNG, standard base64 (44 characters)."""
    return base64.b64encode(secrets.token_bytes(TOKEN_BYTES)).decode()


def secret_manifest(spec: RayCluster, owner: dict[str, Any], token: str) -> dict[str, Any]:
    name = generated_secret_name(spec)
    assert name is not None, "only clusters with a generated Secret have one"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": spec.namespace,
                     "labels": {CLUSTER_LABEL: spec.name}, "ownerReferences": [owner]},
        "stringData": {TOKEN_KEY: token},
    }


def _has_env(container: dict[str, Any], name: str) -> bool:
    return any(e.get("name") == name for e in container.get("env") or [])


def _add_env(container: dict[str, Any], var: dict[str, Any]) -> None:
    if not _has_env(container, var["name"]):
        container.setdefault("env", []).append(var)


def set_container_auth(container: dict[str, Any], spec: RayCluster) -> None:
    """KubeRay's ``SetContainerTokenAuthEnvVars`` (a no-op without ``mode: token``)."""
    if not token_auth(spec):
        return
    _add_env(container, {"name": AUTH_MODE_ENV, "value": "token"})
    if k8s_token_auth(spec):
        _add_env(container, {"name": K8S_TOKEN_AUTH_ENV, "value": "true"})
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("name") == TOKEN_VOLUME for m in mounts):
            mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH,
                           "readOnly": True})
        return
    name = secret_name(spec)
    assert name is not None
    _add_env(container, {"name": AUTH_TOKEN_ENV, "valueFrom": {
        "secretKeyRef": {"name": name, "key": TOKEN_KEY}}})


def disable_unless_set(container: dict[str, Any]) -> None:
    """``RAY_AUTH_MODE=disabled`` unless the container sets a mode itself."""
    _add_env(container, {"name": AUTH_MODE_ENV, "value": "disabled"})


def sidecar_auth(container: dict[str, Any], spec: RayCluster) -> None:
    """The autoscaler sidecar talks to the GCS and the dashboard as the Ray containers do."""
    if token_auth(spec):
        set_container_auth(container, spec)
    else:
        disable_unless_set(container)


def configure_pod(pod_spec: dict[str, Any], spec: RayCluster) -> None:
    """KubeRay's ``configureTokenAuth`` on a head or worker pod: the Ray container
    (the first), ``wait-gcs-ready`` init containers, and the token volume."""
    if not token_auth(spec):
        return
    set_container_auth(pod_spec["containers"][0], spec)
    for init in pod_spec.get("initContainers") or []:
        if init.get("name") == WAIT_GCS_READY:
            set_container_auth(init, spec)
    if k8s_token_auth(spec):
        add_token_volume(pod_spec)


def name_service_account(pod_spec: dict[str, Any], spec: RayCluster) -> None:
    """With Kubernetes tokens, a pod without ``serviceAccountName`` names ``default``.

    The API server's ServiceAccount admission does that on a real cluster; without it
    (envtest, the dev cluster) a pod with a ServiceAccount token volume is invalid.
    Called last, once the head has its autoscaler's account.
    """
    if k8s_token_auth(spec) and not pod_spec.get("serviceAccountName"):
        pod_spec["serviceAccountName"] = "default"


def add_token_volume(pod_spec: dict[str, Any]) -> None:
    """The projected ServiceAccount token (no audience, no expiry: Kubernetes' defaults)."""
    volumes = pod_spec.setdefault("volumes", [])
    if any(v.get("name") == TOKEN_VOLUME for v in volumes):
        return
    volumes.append({"name": TOKEN_VOLUME, "projected": {
        "sources": [{"serviceAccountToken": {"path": "token"}}]}})
