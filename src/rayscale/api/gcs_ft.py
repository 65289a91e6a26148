"""GCS fault tolerance of a RayCluster: when it is on, and KubeRay v1.7's spec rules.

Two ways to turn it on, as in KubeRay (``utils.IsGCSFaultToleranceEnabled``):
``spec.gcsFaultToleranceOptions`` (any value), or the older annotation
``ray.io/ft-enabled: "true"`` (any case) with ``RAY_REDIS_ADDRESS`` (and
``REDIS_PASSWORD``) in the head container's ``env``. The backend is Redis
unless ``gcsFaultToleranceOptions.backend`` is ``rocksdb`` (Ray's embedded
store, KubeRay v1.7).

:func:`problems` is KubeRay's ``ValidateRayClusterSpec`` for GCS fault
tolerance (``ray-operator/controllers/ray/utils/validation.go`` at v1.7.0),
each rule a problem at the field it is about, all of them at once (KubeRay
stops at the first):

- the annotation ``ray.io/ft-enabled`` (any value, even ``"false"``) together
  with ``gcsFaultToleranceOptions``;
- ``RAY_REDIS_ADDRESS`` in the head's env while fault tolerance is off;
- with ``gcsFaultToleranceOptions``: ``rayStartParams.redis-password``,
  ``REDIS_PASSWORD`` or ``RAY_REDIS_ADDRESS`` in the head's env, the annotation
  ``ray.io/external-storage-namespace`` (the options have a field for each);
- ``rayStartParams.redis-username`` or ``REDIS_USERNAME`` in the head's env,
  whatever the form (``gcsFaultToleranceOptions.redisUsername`` only);
- backend ``rocksdb``: none of the Redis fields; ``storage.claimName`` not
  with ``size``, ``storageClassName`` or ``accessModes``; no
  ``RAY_gcs_storage`` / ``RAY_gcs_storage_path`` env, no volume or mount named
  ``gcs-storage`` or mounted at ``/data/gcs`` (KubeRay manages them);
  backend ``redis``: no ``storage``.

A RayJob's ``rayClusterSpec`` and a RayService's ``rayClusterConfig`` are checked
with the RayJob's or RayService's annotations, as KubeRay's ``ValidateRayJobSpec``
and ``ValidateRayServiceSpec`` do.

Beyond KubeRay: ``redisPassword`` / ``redisUsername`` with both ``value`` and
``valueFrom`` is refused here (KubeRay copies both into one env var, which the
API server then refuses when the head pod is created).

KubeRay's feature gate for the rocksdb backend (``GCSFaultToleranceEmbeddedStorage``,
off by default) is the operator's to check, not the spec's: local mode runs
the embedded store without one (:mod:`rayscale.local.cluster`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayscale.api.raycluster import GcsFaultToleranceOptions, RayClusterSpec

#: KubeRay's annotations (``utils/constant.go``).
FT_ENABLED_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_NS_ANNOTATION = "ray.io/external-storage-namespace"
#: The head container's env vars KubeRay reads and sets.
RAY_REDIS_ADDRESS = "RAY_REDIS_ADDRESS"
REDIS_PASSWORD = "REDIS_PASSWORD"
REDIS_USERNAME = "REDIS_USERNAME"
RAY_EXTERNAL_STORAGE_NS = "RAY_external_storage_namespace"
RAY_GCS_STORAGE = "RAY_gcs_storage"
RAY_GCS_STORAGE_PATH = "RAY_gcs_storage_path"
RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S = "RAY_gcs_rpc_server_reconnect_timeout_s"
#: The embedded store's volume, as KubeRay mounts it on the head.
GCS_STORAGE_VOLUME = "gcs-storage"
GCS_STORAGE_MOUNT_PATH = "/data/gcs"

Problem = tuple[tuple[int | str, ...], str, Any]

_HEAD = ("spec", "headGroupSpec")
_HEAD_CONTAINER = (*_HEAD, "template", "spec", "containers", 0)
_OPTIONS = ("spec", "gcsFaultToleranceOptions")


def enabled(spec: RayClusterSpec, annotations: Mapping[str, str]) -> bool:
    """KubeRay's ``IsGCSFaultToleranceEnabled``: the options are set, or the annotation
    ``ray.io/ft-enabled`` is ``true`` in any case."""
    value = annotations.get(FT_ENABLED_ANNOTATION)
    return (value is not None and value.lower() == "true") or (
        spec.gcs_fault_tolerance_options is not None)


def backend(options: GcsFaultToleranceOptions | None) -> str:
    """KubeRay's ``GetGcsFaultToleranceBackend``: ``redis`` unless set."""
    if options is None or not options.backend:
        return "redis"
    return options.backend


def embedded(options: GcsFaultToleranceOptions | None) -> bool:
    """KubeRay's ``IsGCSFaultToleranceEmbedded``: backend ``rocksdb``."""
    return options is not None and backend(options) == "rocksdb"


def head_container_manifest(spec: RayClusterSpec) -> dict[str, Any]:
    """The head's Ray container (the first) as written, with ``env`` and ``volumeMounts``."""
    return spec.head_group_spec.template.spec.ray_container.to_manifest()


def _env_index(container: Mapping[str, Any], name: str) -> int | None:
    for i, var in enumerate(container.get("env") or []):
        if isinstance(var, Mapping) and var.get("name") == name:
            return i
    return None


def problems(spec: RayClusterSpec, annotations: Mapping[str, str],
             at: tuple[str, ...] = ("spec",)) -> list[Problem]:
    """KubeRay's GCS fault tolerance rules, as ``(location, message, value)`` problems;
    locations are from the document's top (``metadata``, and ``at``: where the cluster
    spec is, ``spec`` of a RayCluster, ``spec.rayClusterSpec`` of a RayJob)."""
    return [(_moved(loc, at), message, value)
            for loc, message, value in _problems(spec, annotations)]


def _moved(loc: tuple[int | str, ...], at: tuple[str, ...]) -> tuple[int | str, ...]:
    return (*at, *loc[1:]) if loc and loc[0] == "spec" else loc


def _problems(spec: RayClusterSpec, annotations: Mapping[str, str]) -> list[Problem]:
    out: list[Problem] = []
    options = spec.gcs_fault_tolerance_options
    head = head_container_manifest(spec)
    params = spec.head_group_spec.ray_start_params

    def env_problem(name: str, message: str) -> None:
        at = _env_index(head, name)
        if at is not None:
            out.append(((*_HEAD_CONTAINER, "env", at, "name"), message, name))

    if FT_ENABLED_ANNOTATION in annotations and annotations[FT_ENABLED_ANNOTATION] != "" \
            and options is not None:
        out.append((("metadata", "annotations", FT_ENABLED_ANNOTATION), (
            "cannot be set together with gcsFaultToleranceOptions: use only "
            "gcsFaultToleranceOptions to configure GCS fault tolerance"),
            annotations[FT_ENABLED_ANNOTATION]))
    if not enabled(spec, annotations):
        env_problem(RAY_REDIS_ADDRESS, (
            f"{RAY_REDIS_ADDRESS} implicitly enables GCS fault tolerance, but it is off: set "
            "gcsFaultToleranceOptions (redisAddress) to enable it"))
    if options is not None:
        if params.get("redis-password"):
            out.append(((*_HEAD, "rayStartParams", "redis-password"), (
                "cannot be set with gcsFaultToleranceOptions: use "
                "gcsFaultToleranceOptions.redisPassword instead"), "(not shown)"))
        env_problem(REDIS_PASSWORD, (
            f"cannot set the {REDIS_PASSWORD} env var in the head pod with "
            "gcsFaultToleranceOptions: use gcsFaultToleranceOptions.redisPassword instead"))
        env_problem(RAY_REDIS_ADDRESS, (
            f"cannot set the {RAY_REDIS_ADDRESS} env var in the head pod with "
            "gcsFaultToleranceOptions: use gcsFaultToleranceOptions.redisAddress instead"))
        if annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION):
            out.append((("metadata", "annotations", EXTERNAL_STORAGE_NS_ANNOTATION), (
                "cannot be set with gcsFaultToleranceOptions: use "
                "gcsFaultToleranceOptions.externalStorageNamespace instead"),
                annotations[EXTERNAL_STORAGE_NS_ANNOTATION]))
        out += _credential_problems(options)
        out += _backend_problems(options, head, spec)
    if params.get("redis-username"):
        out.append(((*_HEAD, "rayStartParams", "redis-username"), (
            "cannot set the redis user name in rayStartParams: use "
            "gcsFaultToleranceOptions.redisUsername instead"), params["redis-username"]))
    env_problem(REDIS_USERNAME, (
        f"cannot set the redis user name in the {REDIS_USERNAME} env var: use "
        "gcsFaultToleranceOptions.redisUsername instead"))
    return out


def _credential_problems(options: GcsFaultToleranceOptions) -> list[Problem]:
    out: list[Problem] = []
    for field, credential in (("redisUsername", options.redis_username),
                              ("redisPassword", options.redis_password)):
        if credential is not None and credential.value and credential.value_from:
            out.append(((*_OPTIONS, field), (
                "set either value or valueFrom, not both (they become one env var of the "
                "head pod)"), "(not shown)"))
    return out


def _backend_problems(options: GcsFaultToleranceOptions, head: Mapping[str, Any],
                      spec: RayClusterSpec) -> list[Problem]:
    """KubeRay's ``validateGcsFaultToleranceBackend``."""
    out: list[Problem] = []
    storage = options.storage
    if backend(options) != "rocksdb":
        if storage is not None:
            out.append(((*_OPTIONS, "storage"), (
                "cannot be set when backend is 'redis': it only applies to the 'rocksdb' "
                "backend"), storage))
        return out
    for field, value in (("redisAddress", options.redis_address),
                         ("redisUsername", options.redis_username),
                         ("redisPassword", options.redis_password),
                         ("externalStorageNamespace", options.external_storage_namespace)):
        if value:  # KubeRay: a set credential, a non-empty string
            shown = "(not shown)" if field in ("redisUsername", "redisPassword") else value
            out.append(((*_OPTIONS, field), "cannot be set when backend is 'rocksdb'", shown))
    if storage is not None and storage.get("claimName") and (
            storage.get("size") is not None or storage.get("storageClassName") is not None
            or storage.get("accessModes")):
        out.append(((*_OPTIONS, "storage", "claimName"), (
            "is mutually exclusive with size, storageClassName and accessModes"),
            storage["claimName"]))
    for name in (RAY_GCS_STORAGE, RAY_GCS_STORAGE_PATH):
        at = _env_index(head, name)
        if at is not None:
            out.append(((*_HEAD_CONTAINER, "env", at, "name"), (
                f"cannot set {name} in the head pod with the embedded (rocksdb) backend: "
                "KubeRay manages it"), name))
    for i, mount in enumerate(head.get("volumeMounts") or []):
        if isinstance(mount, Mapping) and (mount.get("mountPath") == GCS_STORAGE_MOUNT_PATH
                                           or mount.get("name") == GCS_STORAGE_VOLUME):
            out.append(((*_HEAD_CONTAINER, "volumeMounts", i), (
                f"no volume mount named {GCS_STORAGE_VOLUME!r} or mounted at "
                f"{GCS_STORAGE_MOUNT_PATH} with the embedded (rocksdb) backend: KubeRay "
                "manages it"), mount.get("name")))
    volumes = spec.head_group_spec.template.spec.to_manifest().get("volumes") or []
    for i, volume in enumerate(volumes):
        if isinstance(volume, Mapping) and volume.get("name") == GCS_STORAGE_VOLUME:
            out.append(((*_HEAD, "template", "spec", "volumes", i, "name"), (
                f"no volume named {GCS_STORAGE_VOLUME!r} with the embedded (rocksdb) "
                "backend: KubeRay manages it"), GCS_STORAGE_VOLUME))
    return out
