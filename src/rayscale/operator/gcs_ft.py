"""GCS fault tolerance on Kubernetes, the way KubeRay v1.7 does it: pure parts.

What the pods get (KubeRay's ``configureGCSFaultTolerance``,
``ray-operator/controllers/ray/common/pod.go`` at v1.7.0):

- **Every head pod**: the annotation ``ray.io/ft-enabled`` = ``"true"`` or
  ``"false"``.
- **Head, Redis backend, with** ``gcsFaultToleranceOptions``:
  ``RAY_external_storage_namespace`` (``externalStorageNamespace``, else the
  RayCluster's uid: two clusters never share keys; also the pod annotation
  ``ray.io/external-storage-namespace``), ``RAY_REDIS_ADDRESS``
  (``redisAddress``), ``REDIS_USERNAME`` / ``REDIS_PASSWORD`` from
  ``redisUsername`` / ``redisPassword`` as written: a ``value``, or the
  ``valueFrom`` (``secretKeyRef``) itself, so a Secret's content never enters
  a pod spec; and ``ray start --redis-username/--redis-password`` referring to
  those variables.
- **Head, the older form** (annotation ``ray.io/ft-enabled: "true"``): the
  storage namespace from the annotation ``ray.io/external-storage-namespace``,
  else the uid; the user's own ``RAY_REDIS_ADDRESS`` / ``REDIS_PASSWORD`` env
  stay as written; ``REDIS_PASSWORD`` is set from a literal
  ``rayStartParams.redis-password`` when the env has none (KubeRay's, for the
  cleanup Job).
- **Workers**, either form and backend: ``RAY_gcs_rpc_server_reconnect_timeout_s
  = 600`` (Ray's default is 60 s; a new head takes about 120 s), unless set.

An env var the container already has is never replaced (KubeRay's
``EnvVarExists`` checks), except the ones the spec rules refuse anyway.

One difference is forced by how rayscale starts Ray: KubeRay's ``ray start`` is
a shell command, so ``redis-password: $REDIS_PASSWORD`` is expanded by bash;
rayscale's is an argument list, so such a reference (``$NAME`` or ``${NAME}``
in ``redis-password`` / ``redis-username``) becomes Kubernetes' ``$(NAME)``,
which the kubelet expands from the container's env (secret refs included).

The embedded (rocksdb) backend is behind KubeRay's feature gate
``GCSFaultToleranceEmbeddedStorage`` (off by default); rayscale's operator does
not implement it yet and refuses it (:func:`operator_problems`).

On deletion (KubeRay's ``raycluster_controller.go``): a RayCluster with Redis
fault tolerance carries the finalizer ``ray.io/gcs-ft-redis-cleanup-finalizer``
(unless the operator's env has ``ENABLE_GCS_FT_REDIS_CLEANUP=false``); when
it is deleted, its pods are deleted, then a Job (``<name>-redis-cleanup``) from
the head's pod deletes the storage namespace's keys; the finalizer goes when
the Job finishes, or after ``ray.io/gcs-ft-deletion-timeout`` seconds (default
300) from the deletion, with a Warning Event ``ForceDeletedStuckCluster``.
A failed Job also removes it, with rayscale's Warning Event ``RedisCleanupJobFailed``
(KubeRay only logs it).
:func:`deletion_step` is that decision; :func:`cleanup_job` the Job.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from rayscale.api import RayCluster
from rayscale.api import gcs_ft as api
from rayscale.api.gcs_ft import (
    EXTERNAL_STORAGE_NS_ANNOTATION,
    FT_ENABLED_ANNOTATION,
    RAY_EXTERNAL_STORAGE_NS,
    RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S,
    RAY_REDIS_ADDRESS,
    REDIS_PASSWORD,
    REDIS_USERNAME,
)

#: KubeRay's ``DefaultWorkerRayGcsReconnectTimeoutS``.
WORKER_RECONNECT_TIMEOUT_S = "600"
#: KubeRay's ``GCSFaultToleranceRedisCleanupFinalizer``.
FINALIZER = "ray.io/gcs-ft-redis-cleanup-finalizer"
#: KubeRay's ``RayClusterGCSFTDeletionTimeoutAnnotation``: whole seconds > 0.
DELETION_TIMEOUT_ANNOTATION = "ray.io/gcs-ft-deletion-timeout"
#: KubeRay's ``RAYCLUSTER_GCS_FT_DELETION_TIMEOUT_DEFAULT``.
DEFAULT_DELETION_TIMEOUT_S = 300
#: The operator's env var that turns the cleanup off (KubeRay's).
CLEANUP_ENV = "ENABLE_GCS_FT_REDIS_CLEANUP"
#: KubeRay's feature gate for the rocksdb backend (not implemented by rayscale).
EMBEDDED_FEATURE_GATE = "GCSFaultToleranceEmbeddedStorage"
#: The cleanup Job's pod's ``ray.io/node-type`` (KubeRay's ``RedisCleanupNode``).
CLEANUP_NODE_TYPE = "redis-cleanup"
#: KubeRay: the cleanup Job is best effort for 5 minutes.
CLEANUP_JOB_DEADLINE_S = 300
_NAME_MAX = 63

_SHELL_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def enabled(cluster: RayCluster) -> bool:
    return api.enabled(cluster.spec, cluster.metadata.annotations)


def redis_backed(cluster: RayCluster) -> bool:
    """Fault tolerance with Redis (either form): what the cleanup finalizer is for."""
    return enabled(cluster) and not api.embedded(cluster.spec.gcs_fault_tolerance_options)


def storage_namespace(cluster: RayCluster) -> str:
    """KubeRay's: the uid, else the annotation, else ``externalStorageNamespace``
    (last wins)."""
    namespace = cluster.metadata.uid or ""
    annotated = cluster.metadata.annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION)
    if annotated is not None:
        namespace = annotated
    options = cluster.spec.gcs_fault_tolerance_options
    if options is not None and options.external_storage_namespace:
        namespace = options.external_storage_namespace
    return namespace


def operator_problems(cluster: RayCluster) -> list[str]:
    """What the operator refuses beyond the spec rules: the embedded backend, which
    KubeRay v1.7 keeps behind a feature gate (off by default) and rayscale's operator
    does not implement yet."""
    if api.embedded(cluster.spec.gcs_fault_tolerance_options):
        return ["gcsFaultToleranceOptions.backend: the embedded RocksDB backend ('rocksdb') "
                f"needs KubeRay's feature gate {EMBEDDED_FEATURE_GATE} (off by default), which "
                "rayscale's operator does not implement yet; use Redis (redisAddress) on "
                "Kubernetes (local mode runs the embedded store: `rayscale up --ha`)"]
    return []


def _kube_ref(value: str) -> str:
    """``$NAME`` / ``${NAME}`` (bash, as KubeRay's shell command expands them) ->
    ``$(NAME)`` (Kubernetes, for rayscale's argument list)."""
    return _SHELL_REF.sub(lambda m: f"$({m.group(1) or m.group(2)})", value)


def head_start_params(cluster: RayCluster) -> dict[str, str]:
    """``ray start`` params of the head for fault tolerance (they win over the user's)."""
    if not enabled(cluster):
        return {}
    options = cluster.spec.gcs_fault_tolerance_options
    out: dict[str, str] = {}
    if options is not None:
        if api.embedded(options):
            return {}
        if options.redis_username is not None:
            out["redis-username"] = f"$({REDIS_USERNAME})"
        if options.redis_password is not None:
            out["redis-password"] = f"$({REDIS_PASSWORD})"
        return out
    params = cluster.head.ray_start_params
    for key in ("redis-password", "redis-username"):
        value = params.get(key)
        if value and _SHELL_REF.search(value):
            out[key] = _kube_ref(value)
    return out


def _has_env(container: Mapping[str, Any], name: str) -> bool:
    return any(e.get("name") == name for e in container.get("env") or [])


def _credential_env(name: str, credential: Any) -> dict[str, Any]:
    """An env var from a ``RedisCredential``: its ``valueFrom`` as written, or its value."""
    if credential.value_from:
        return {"name": name, "valueFrom": copy.deepcopy(credential.value_from)}
    return {"name": name, "value": credential.value or ""}


def configure_head(pod: dict[str, Any], cluster: RayCluster) -> None:
    """The head pod's annotations and Ray container env (see the module docstring)."""
    on = enabled(cluster)
    annotations = pod["metadata"].setdefault("annotations", {})
    annotations[FT_ENABLED_ANNOTATION] = "true" if on else "false"
    options = cluster.spec.gcs_fault_tolerance_options
    if not on or api.embedded(options):
        return
    container = pod["spec"]["containers"][0]
    env = container.setdefault("env", [])
    namespace = storage_namespace(cluster)
    annotations[EXTERNAL_STORAGE_NS_ANNOTATION] = namespace
    if not _has_env(container, RAY_EXTERNAL_STORAGE_NS):
        env.append({"name": RAY_EXTERNAL_STORAGE_NS, "value": namespace})
    if options is not None:
        env.append({"name": RAY_REDIS_ADDRESS, "value": options.redis_address or ""})
        if options.redis_username is not None:
            env.append(_credential_env(REDIS_USERNAME, options.redis_username))
        if options.redis_password is not None:
            env.append(_credential_env(REDIS_PASSWORD, options.redis_password))
        return
    password = cluster.head.ray_start_params.get("redis-password")
    if password is not None and not _has_env(container, REDIS_PASSWORD) \
            and not _SHELL_REF.search(password):
        # KubeRay's: a literal password in rayStartParams, for the cleanup Job
        env.append({"name": REDIS_PASSWORD, "value": password})


def configure_worker(pod: dict[str, Any], cluster: RayCluster) -> None:
    """Workers outlive a head restart: Ray's reconnect timeout is KubeRay's 600 s."""
    if not enabled(cluster):
        return
    container = pod["spec"]["containers"][0]
    if not _has_env(container, RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S):
        container.setdefault("env", []).append(
            {"name": RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S, "value": WORKER_RECONNECT_TIMEOUT_S})


# ------------------------------------------------------------------ deletion

_GO_INT = re.compile(r"[+-]?[0-9]+")


def cleanup_enabled(operator_env: Mapping[str, str]) -> bool:
    """KubeRay's flag: on unless ``ENABLE_GCS_FT_REDIS_CLEANUP`` is ``false`` (any case)."""
    return operator_env.get(CLEANUP_ENV, "").lower() != "false"


def deletion_timeout_s(annotations: Mapping[str, str]) -> int:
    """``ray.io/gcs-ft-deletion-timeout``: whole seconds > 0 (Go's ``strconv.Atoi``),
    else 300."""
    text = annotations.get(DELETION_TIMEOUT_ANNOTATION)
    if text is not None and _GO_INT.fullmatch(text):
        seconds = int(text)
        if 0 < seconds < 2**63:
            return seconds
    return DEFAULT_DELETION_TIMEOUT_S


Action = Literal[
    "none",              # nothing about the finalizer to do
    "add-finalizer",     # then reconcile again (KubeRay starts reconciling once it is on)
    "remove-stale",      # embedded backend on deletion: no Redis to clean
    "delete-pods",       # delete head and workers; wait while the head is still there
    "force-remove",      # timed out: remove the finalizer, Warning Event
    "create-job",        # the cleanup Job, Normal Event (Warning if the create fails)
    "wait-job",          # the Job runs
    "remove-finalizer",  # the Job finished (complete or failed)
    "ignore",            # deleted, no finalizer of ours: nothing more to reconcile
]


@dataclass(frozen=True)
class DeletionStep:
    action: Action
    #: Event (type, reason) that goes with it, if any.
    event: tuple[str, str] | None = None
    message: str = ""


JobState = Literal["absent", "running", "complete", "failed"]


def job_state(job: Mapping[str, Any] | None) -> JobState:
    """KubeRay's ``IsJobFinished``: Complete/Failed true, FailureTarget true is failed."""
    if job is None:
        return "absent"
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "complete"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


def deletion_step(
    cluster: RayCluster,
    finalizers: list[str],
    deletion_timestamp: datetime | None,
    now: datetime,
    head_pods_left: int,
    job: Mapping[str, Any] | None,
    cleanup_on: bool = True,
) -> DeletionStep:
    """KubeRay's Redis cleanup block of ``RayClusterReconciler.rayClusterReconcile``, as
    one decision from what was observed (the caller does the I/O).

    While a Redis-backed cluster is being deleted, every step first deletes its head
    and worker pods (KubeRay does, each round): the cleanup must not race a GCS that
    still writes. As in KubeRay, the timeout is only looked at once the head pod is
    gone, and counts from the deletion timestamp, not from the Job's start.
    """
    ours = FINALIZER in finalizers
    deleting = deletion_timestamp is not None
    if deleting and ours and api.embedded(cluster.spec.gcs_fault_tolerance_options):
        return DeletionStep("remove-stale")
    if cleanup_on and redis_backed(cluster):
        if not deleting:
            return DeletionStep("none" if ours else "add-finalizer")
        if head_pods_left > 0:
            return DeletionStep("delete-pods")
        assert deletion_timestamp is not None
        age = (now - deletion_timestamp).total_seconds()
        if ours and age >= deletion_timeout_s(cluster.metadata.annotations):
            # KubeRay names the cluster's annotation here (empty with the options form);
            # rayscale names the namespace the head used
            return DeletionStep("force-remove", ("Warning", "ForceDeletedStuckCluster"), (
                f"Force-removed GCS FT finalizer after {age:.0f}s due to Redis cleanup timeout; "
                f"Redis storage namespace {storage_namespace(cluster)!r} may need manual "
                "cleanup"))
        state = job_state(job)
        if state == "absent":
            name = cleanup_job_name(cluster.name)
            return DeletionStep("create-job", ("Normal", "CreatedRedisCleanupJob"),
                                f"Created Redis cleanup Job {cluster.namespace}/{name}")
        if state == "running":
            return DeletionStep("wait-job")
        if state == "complete":
            return DeletionStep("remove-finalizer", None, (
                "the Redis cleanup Job completed: the storage namespace is deleted"))
        # KubeRay only logs this; rayscale also says it where users look (its own reason)
        return DeletionStep("remove-finalizer", ("Warning", "RedisCleanupJobFailed"), (
            f"Removed the GCS FT finalizer: the Redis cleanup Job "
            f"{cluster.namespace}/{cleanup_job_name(cluster.name)} failed; Redis storage "
            f"namespace {storage_namespace(cluster)!r} may need manual cleanup (delete its "
            "keys in Redis by hand)"))
    return DeletionStep("ignore" if deleting else "none")


def cleanup_job_name(cluster: str) -> str:
    """KubeRay's ``TrimJobName(<cluster>-redis-cleanup)``: the last 63 characters, a
    leading non-alphanumeric one replaced by ``r`` (``CheckLabel``)."""
    name = f"{cluster}-redis-cleanup"
    if len(name) > _NAME_MAX:
        name = name[len(name) - _NAME_MAX:]
    if name and not name[0].isalnum():
        name = "r" + name[1:]
    return name


#: KubeRay's cleanup script (``buildRedisCleanupJob``): Ray's ``cleanup_redis_storage``
#: for the head's address, password (and user name) and storage namespace.
_CLEANUP_PREFIX = (
    "echo \"To get more information about manually deleting the storage namespace in Redis "
    "and removing the RayCluster's finalizer, please check "
    "https://docs.ray.io/en/master/cluster/kubernetes/user-guides/kuberay-gcs-ft.html for "
    "more details.\" && "
    "python -c "
    "\"from ray._private.gcs_utils import cleanup_redis_storage; "
    "from urllib.parse import urlparse; "
    "import os; "
    "import sys; "
    "redis_address = os.getenv('RAY_REDIS_ADDRESS', '').split(',')[0]; "
    "redis_address = redis_address if '://' in redis_address else 'redis://' + redis_address; "
    "parsed = urlparse(redis_address); "
)


def cleanup_script(with_username: bool) -> str:
    user = "username=os.getenv('REDIS_USERNAME', parsed.username), " if with_username else ""
    return _CLEANUP_PREFIX + (
        "sys.exit(1) if not cleanup_redis_storage(host=parsed.hostname, port=parsed.port, "
        f"{user}password=os.getenv('REDIS_PASSWORD', parsed.password or ''), "
        "use_ssl=parsed.scheme=='rediss', "
        "storage_namespace=os.getenv('RAY_external_storage_namespace')) else None\"")


def cleanup_job(head_pod: Mapping[str, Any], cluster: RayCluster) -> dict[str, Any]:
    """KubeRay's ``buildRedisCleanupJob`` from the head pod's manifest (as the operator
    builds it): its Ray container only, running the cleanup script, no probes, 200m CPU
    and 256Mi, never restarted, no retry, 300 s deadline; labels and annotations the
    head's, node type ``redis-cleanup``. The caller adds namespace and owner."""
    pod = copy.deepcopy(dict(head_pod))
    meta = pod.get("metadata") or {}
    labels = {**(meta.get("labels") or {}), "ray.io/node-type": CLEANUP_NODE_TYPE}
    annotations = dict(meta.get("annotations") or {})
    spec = pod["spec"]
    ray = spec["containers"][0]
    spec["containers"] = [ray]
    spec["initContainers"] = [c for c in spec.get("initContainers") or []
                              if c.get("name") != "wait-for-tls-ip-san"]
    if not spec["initContainers"]:
        del spec["initContainers"]
    ray["command"] = ["/bin/bash", "-c", "--"]
    ray["args"] = [cleanup_script(_has_env(ray, REDIS_USERNAME))]
    ray.pop("livenessProbe", None)
    ray.pop("readinessProbe", None)
    ray.setdefault("env", []).extend([
        {"name": "RAY_redis_db_connect_retries", "value": "120"},
        {"name": "RAY_redis_db_connect_wait_milliseconds", "value": "500"},
    ])
    fixed = {"cpu": "200m", "memory": "256Mi"}
    ray["resources"] = {"limits": dict(fixed), "requests": dict(fixed)}
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": cleanup_job_name(cluster.name), "labels": labels,
                     "annotations": annotations},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": CLEANUP_JOB_DEADLINE_S,
            "template": {"metadata": {"labels": labels, "annotations": annotations},
                         "spec": spec},
        },
    }
