"""KubeRay's ``ray.io/v1`` RayCluster: spec and status, with KubeRay's names and defaults.

Beyond KubeRay, a worker group may carry rayscale's two extensions:
``priority`` (higher is preferred when several groups can hold the same
demand: ordered fallback between pools) and ``memoryTargetFraction`` (scale
up when the group's mean physical memory use exceeds it).

Validation rules beyond plain types, and why:

- ``metadata.name`` must be a DNS-1035 label (at most 63 lower-case letters,
  digits and ``-``, starting with a letter), the rule KubeRay's
  ``ValidateRayClusterMetadata`` enforces because the name prefixes service
  names.
- ``groupName`` must be a DNS-1123 label (it becomes part of pod names and a
  label value), unique, and not ``headgroup``, which Ray's autoscaler uses
  for the head.
- ``replicas`` outside ``[minReplicas, maxReplicas]`` is not an error: KubeRay
  clamps it (:attr:`WorkerGroupSpec.desired_replicas`).
  ``maxReplicas < minReplicas`` is an error.
- A worker group whose nodes would have no CPU, GPU, memory or custom
  resource could never run anything: an error.
- No Ray resource of a node may be above 10^14 (Ray's limit for one node,
  :data:`rayscale.api.resources.MAX_NODE_RESOURCE`); the error names the
  field that says it.
- A group's Ray node labels are its top-level ``labels`` (KubeRay v1.5), never
  ``rayStartParams.labels``, which KubeRay v1.7 refuses ("not supported ...;
  please use the top-level Labels field instead"), and so does rayscale. Keys
  and values follow Kubernetes label syntax, as KubeRay's
  ``validateRayGroupLabels`` checks (they become pod labels too). Three keys
  are refused beyond KubeRay: ``ray.io/node-id`` (Ray's raylet aborts when
  ``ray start --labels`` sets it: checked with Ray 2.60) and rayscale's own
  ``rayscale.io/group`` and ``rayscale.io/node``, which map a Ray node to the
  process or pod that runs it. Other ``ray.io/`` keys (``ray.io/market-type``,
  as KubeRay's samples use) are accepted: Ray 2.60's ``ray start --labels=k=v``
  takes them, and a user's ``ray.io/node-group`` replaces Ray's default.
- GCS fault tolerance (``gcsFaultToleranceOptions``, the annotation
  ``ray.io/ft-enabled``): KubeRay's rules, in :mod:`rayscale.api.gcs_ft`; they
  read the annotations too, so they run on the whole RayCluster (and on a
  RayJob's or RayService's, with its annotations).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from rayscale.api import gcs_ft
from rayscale.api.base import (
    MANAGED_BY_RULES,
    Condition,
    KubeModel,
    NonNegFloat,
    NonNegInt32,
    ObjectMeta,
    Quantity,
)
from rayscale.api.errors import describe, field_errors, own_error
from rayscale.api.pod import PodTemplateSpec
from rayscale.api.quantity import shown
from rayscale.api.resources import (
    can_run_work,
    check_node_resources,
    check_ray_start_params,
    derive_ray_resources,
)
from rayscale.labels import (
    GROUP_LABEL,
    HEAD_GROUP,
    NODE_LABEL,
    RAY_API_VERSION,
    RAY_NODE_GROUP_LABEL,
    RAY_NODE_ID_LABEL,
    UNBOUNDED_REPLICAS,
)

API_VERSIONS = (RAY_API_VERSION, "ray.io/v1alpha1")
UpscalingMode = Literal["Default", "Conservative", "Aggressive"]
AutoscalerVersion = Literal["v1", "v2"]
AuthMode = Literal["disabled", "token"]
#: KubeRay / Ray default ``autoscalerOptions.idleTimeoutSeconds``.
DEFAULT_IDLE_TIMEOUT_S = 60.0

#: Stands for a header field the document left out (``null`` counts as absent).
_ABSENT = object()
#: A RayCluster's name (KubeRay's ``ValidateRayClusterMetadata``).
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
#: A worker group's name.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS1035_PATTERN = f"^{DNS1035_LABEL.pattern}$"
DNS1123_PATTERN = f"^{DNS1123_LABEL.pattern}$"


def _param_text(value: Any) -> Any:
    """KubeRay declares rayStartParams values as strings; YAML users often write
    numbers or booleans unquoted, so scalars are stored as strings (booleans as
    ``"true"``/``"false"``, null as ``""``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


#: More than ``ray start`` has options.
MAX_RAY_START_PARAMS = 128

#: ``rayStartParams``: a map of ``ray start`` flag (without ``--``) to value.
RayStartParams = dict[str, Annotated[str, BeforeValidator(_param_text)]]


def check_params(params: RayStartParams) -> RayStartParams:
    """The resource params a group sets (``num-cpus``...) are usable, or errors by key."""
    problems = check_ray_start_params(params)
    if "labels" in params:  # KubeRay v1.7's validateRayGroupLabels
        problems.append((("labels",), (
            "not supported; put the group's Ray node labels in its top-level `labels` field "
            "instead (as KubeRay v1.7 requires)"), params["labels"]))
    if len(params) > MAX_RAY_START_PARAMS:
        problems.append(((), f"at most {MAX_RAY_START_PARAMS} params, got {len(params)}",
                         str(len(params))))
    if problems:
        raise field_errors("rayStartParams", problems)
    return params


# ---------------------------------------------------------------- labels

#: Kubernetes' label name (``IsQualifiedName``'s name part) and value.
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
#: A DNS-1123 subdomain: a label key's optional prefix.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_SYNTAX = (
    "at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a "
    "letter or digit"
)
#: Keys a group's labels may not set, and why.
RESERVED_LABELS: dict[str, str] = {
    RAY_NODE_ID_LABEL: "Ray sets it to the node's id (its raylet aborts if ray start sets it)",
    GROUP_LABEL: "rayscale sets it on every node: it maps a Ray node to its group",
    NODE_LABEL: "rayscale sets it on every node: it maps a Ray node to its process or pod",
}


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (``IsQualifiedName``), or None."""
    parts = key.split("/")
    if len(parts) > 2:
        return "a label key is an optional DNS subdomain prefix and '/', then a name"
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return "the prefix before '/' must not be empty"
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return (
                f"the prefix {shown(prefix, 70)} must be a DNS subdomain (at most 253 characters: "
                "lower-case letters, digits, '-' and '.', starting and ending with a letter or "
                "digit)"
            )
    if not name:
        return "the name part must not be empty"
    if len(name) > 63:
        return f"the name part has {len(name)} characters, at most 63"
    if not _LABEL_NAME.fullmatch(name):
        return f"the name part {shown(name, 70)} must be {_LABEL_SYNTAX}"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value (``IsValidLabelValue``), or None."""
    if len(value) > 63:
        return f"invalid label value: {len(value)} characters, at most 63"
    if value and not _LABEL_NAME.fullmatch(value):
        return f"invalid label value {shown(value, 70)}: must be empty or {_LABEL_SYNTAX}"
    return None


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """A group's ``labels``: Kubernetes label syntax, no reserved key; errors by key."""
    problems: list[tuple[tuple[str, ...], str, Any]] = []
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem is not None:
            problems.append(((key,), f"invalid label key: {problem}", key))
        elif key in RESERVED_LABELS:
            problems.append(((key,), f"reserved: {RESERVED_LABELS[key]}", key))
        problem = label_value_problem(value)
        if problem is not None:
            problems.append(((key,), problem, value))
    if problems:
        raise field_errors("labels", problems)
    return labels


# --------------------------------------------------------------------- spec


class ScaleStrategy(KubeModel):
    """``workerGroupSpecs[].scaleStrategy``: the pods to delete, by name."""

    workers_to_delete: list[str] = Field(default_factory=list)


class AutoscalerOptions(KubeModel):
    upscaling_mode: UpscalingMode | None = None
    idle_timeout_seconds: NonNegFloat | None = None
    #: ``v1`` or ``v2``: which Ray autoscaler KubeRay would run (rayscale runs its own).
    version: AutoscalerVersion | None = None
    image: str | None = None
    image_pull_policy: str | None = None
    resources: dict[str, Any] | None = None
    security_context: dict[str, Any] | None = None
    env: list[dict[str, Any]] | None = None
    env_from: list[dict[str, Any]] | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    command: list[str] | None = None
    args: list[str] | None = None


class RedisCredential(KubeModel):
    """A Redis user name or password: a literal value or a reference to a Secret."""

    value: str | None = None
    value_from: dict[str, Any] | None = None


GcsFaultToleranceBackend = Literal["redis", "rocksdb"]


class GcsFaultToleranceOptions(KubeModel):
    """GCS fault tolerance: Redis (``redisAddress``) or, from KubeRay v1.7, embedded RocksDB."""

    backend: GcsFaultToleranceBackend | None = None
    redis_address: str | None = None
    redis_username: RedisCredential | None = None
    redis_password: RedisCredential | None = None
    external_storage_namespace: str | None = None
    #: RocksDB backend: the volume that keeps the GCS tables.
    storage: dict[str, Any] | None = None


class AuthOptions(KubeModel):
    """Ray's token authentication (KubeRay v1.5+; ``secretName`` and
    ``enableK8sTokenAuth`` v1.6+).

    KubeRay documents ``token`` as the default mode, but neither its CRD nor its
    operator applies that default: only an explicit ``mode: token`` turns auth
    on (:attr:`token_auth`). ``secretName`` names the user's Secret (key
    ``auth_token``) instead of the one the operator generates;
    ``enableK8sTokenAuth`` makes Ray check Kubernetes ServiceAccount tokens
    (TokenReview) instead of a shared token.
    """

    mode: AuthMode | None = None
    #: A Secret of the user's, key ``auth_token``: no Secret is generated.
    secret_name: str | None = None
    enable_k8s_token_auth: bool | None = Field(default=None, alias="enableK8sTokenAuth")

    @property
    def token_auth(self) -> bool:
        """Token auth on (``mode: token``), as KubeRay's ``IsAuthEnabled``."""
        return self.mode == "token"

    @property
    def k8s_token_auth(self) -> bool:
        """Kubernetes-delegated token auth, as KubeRay's ``IsK8sAuthEnabled``."""
        return bool(self.enable_k8s_token_auth)


#: The oldest Ray that supports token auth, and Kubernetes-delegated token auth (KubeRay).
MIN_RAY_TOKEN_AUTH = (2, 52, 0)
MIN_RAY_K8S_TOKEN_AUTH = (2, 55, 0)
#: KubeRay's ``version.ParseGeneric``: ``v`` optional, two or more numbers, anything after.
_GENERIC_VERSION = re.compile(r"\s*v?([0-9]+(?:\.[0-9]+)*)(.*)", re.DOTALL)


def parse_generic_version(text: str) -> tuple[int, ...] | None:
    """``"2.52"`` -> (2, 52, 0), ``"2.53.0-rc1"`` -> (2, 53, 0); None if not a version."""
    match = _GENERIC_VERSION.fullmatch(text)
    if match is None:
        return None
    parts = match.group(1).split(".")
    if len(parts) < 2 or (parts[0].startswith("0") and parts[0] != "0"):
        return None
    numbers = tuple(int(n) for n in parts)
    return numbers + (0,) * (3 - len(numbers))


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def check_auth_options(auth: AuthOptions | None, ray_version: str | None) -> list[
        tuple[tuple[str, ...], str, Any]]:
    """KubeRay's ``ValidateRayClusterSpec`` rules for ``authOptions``, as
    ``(location under authOptions, message, value)`` problems."""
    if auth is None:
        return []
    problems: list[tuple[tuple[str, ...], str, Any]] = []
    if not auth.token_auth:
        if auth.k8s_token_auth:
            problems.append((("enableK8sTokenAuth",), (
                "needs authOptions.mode 'token' "
                f"(mode is {describe(auth.mode) if auth.mode else 'not set'})"), True))
        return problems
    least = _version_text(MIN_RAY_TOKEN_AUTH)
    if ray_version is None:
        return [(("mode",), f"'token' needs rayVersion {least} or later; rayVersion is "
                 "not set", auth.mode)]
    version = parse_generic_version(ray_version)
    if version is None:
        return [(("mode",), f"'token' needs rayVersion {least} or later; rayVersion "
                 f"{ray_version!r} is not a version", auth.mode)]
    if version < MIN_RAY_TOKEN_AUTH:
        return [(("mode",), f"'token' needs Ray {least} or later, but rayVersion is "
                 f"{ray_version!r}", auth.mode)]
    if auth.k8s_token_auth:
        if version < MIN_RAY_K8S_TOKEN_AUTH:
            problems.append((("enableK8sTokenAuth",), (
                f"needs Ray {_version_text(MIN_RAY_K8S_TOKEN_AUTH)} or later, but rayVersion "
                f"is {ray_version!r}"), True))
        if auth.secret_name:
            problems.append((("enableK8sTokenAuth",), (
                "cannot be combined with authOptions.secretName "
                f"({auth.secret_name!r}): Kubernetes token auth uses ServiceAccount tokens, "
                "not a Secret"), True))
    return problems


def without_k8s_token_auth(spec: RayClusterSpec | None, kind: str) -> RayClusterSpec | None:
    """A RayJob's or RayService's cluster spec, refused with ``enableK8sTokenAuth`` as
    KubeRay refuses it (it supports Kubernetes token auth for a RayCluster only)."""
    if spec is not None and spec.auth_options is not None and spec.auth_options.k8s_token_auth:
        raise field_errors(kind, [(("authOptions", "enableK8sTokenAuth"), (
            f"not supported for a {kind} (only a RayCluster may use Kubernetes token auth)"
        ), True)])
    return spec


UpgradeType = Literal["Recreate", "None"]


class UpgradeStrategy(KubeModel):
    type: UpgradeType | None = None


class _GroupBase(KubeModel):
    """What the head and worker groups share: the derived Ray resources."""

    _ray_resources: dict[str, float] = PrivateAttr(default_factory=dict)

    @property
    def ray_resources(self) -> dict[str, float]:
        """The Ray resources of one node of this group (see :mod:`rayscale.api.resources`)."""
        return dict(self._ray_resources)

    def _ray_labels(self, group: str) -> dict[str, str]:
        """The Ray labels a node of this group gets: Ray's ``ray.io/node-group`` (from
        ``RAY_NODE_TYPE_NAME``), then the group's ``labels``, which win over Ray's
        defaults as they do in ``ray start``."""
        labels: dict[str, str] = getattr(self, "labels")  # noqa: B009
        return {RAY_NODE_GROUP_LABEL: group, **labels}

    def _derive(self) -> dict[str, float]:
        params: RayStartParams = getattr(self, "ray_start_params")  # noqa: B009
        resources: dict[str, Any] = getattr(self, "resources")  # noqa: B009
        template: PodTemplateSpec = getattr(self, "template")  # noqa: B009
        too_large = check_node_resources(template.spec.ray_container, resources)
        if too_large:
            raise field_errors("group", too_large)
        self._ray_resources = derive_ray_resources(params, template.spec.ray_container, resources)
        return self._ray_resources


class HeadGroupSpec(_GroupBase):
    """``spec.headGroupSpec``."""

    ray_start_params: RayStartParams = Field(
        default_factory=dict, json_schema_extra={"maxProperties": MAX_RAY_START_PARAMS}
    )
    template: PodTemplateSpec
    service_type: str | None = None
    enable_ingress: bool | None = None
    head_service: dict[str, Any] | None = None
    ingress_options: dict[str, Any] | None = None
    #: KubeRay v1.5: Ray resources of the head, overriding the container's.
    resources: dict[str, Quantity] = Field(default_factory=dict)
    #: KubeRay v1.5: Ray node labels of the head.
    labels: dict[str, str] = Field(default_factory=dict)

    _params = field_validator("ray_start_params")(check_params)
    _labels = field_validator("labels")(check_labels)

    @property
    def ray_labels(self) -> dict[str, str]:
        """The Ray labels of the head node (besides rayscale's own and ``ray.io/node-id``)."""
        return self._ray_labels(HEAD_GROUP)

    @model_validator(mode="after")
    def _resources(self) -> HeadGroupSpec:
        self._derive()
        return self


class WorkerGroupSpec(_GroupBase):
    """One entry of ``spec.workerGroupSpecs``."""

    #: The JSON schema states the rule ``_group_name`` checks (the CRD is made from it).
    group_name: str = Field(json_schema_extra={"maxLength": 63, "pattern": DNS1123_PATTERN})
    min_replicas: NonNegInt32 = 0
    max_replicas: NonNegInt32 = UNBOUNDED_REPLICAS
    #: Desired replicas; absent means ``minReplicas`` (see :attr:`desired_replicas`).
    replicas: NonNegInt32 | None = None
    #: Ray nodes (pods) per replica, for multi-host TPU slices.
    num_of_hosts: Annotated[int, Field(ge=1, le=UNBOUNDED_REPLICAS)] = 1
    #: None: the cluster's ``autoscalerOptions.idleTimeoutSeconds``.
    idle_timeout_seconds: NonNegFloat | None = None
    #: rayscale: higher is preferred when several groups can hold the same demand.
    priority: Annotated[int, Field(ge=-UNBOUNDED_REPLICAS - 1, le=UNBOUNDED_REPLICAS)] = 0
    #: rayscale: scale up when the group's mean physical memory use exceeds it.
    memory_target_fraction: float | None = Field(
        default=None, json_schema_extra={"exclusiveMinimum": 0, "maximum": 1}  # see _fraction
    )
    #: KubeRay deletes the group's pods while true.
    suspend: bool = False
    ray_start_params: RayStartParams = Field(
        default_factory=dict, json_schema_extra={"maxProperties": MAX_RAY_START_PARAMS}
    )
    template: PodTemplateSpec
    scale_strategy: ScaleStrategy = Field(default_factory=ScaleStrategy)
    #: KubeRay v1.5: Ray resources of one node, overriding the container's.
    resources: dict[str, Quantity] = Field(default_factory=dict)
    #: KubeRay v1.5: Ray node labels.
    labels: dict[str, str] = Field(default_factory=dict)

    _labels = field_validator("labels")(check_labels)

    @field_validator("group_name")
    @classmethod
    def _group_name(cls, name: str) -> str:
        if not DNS1123_LABEL.fullmatch(name):
            raise ValueError(
                "must be a DNS-1123 label (at most 63 lower-case letters, digits and '-', "
                f"starting and ending with a letter or digit), got {name!r}"
            )
        if name == HEAD_GROUP:
            raise ValueError(f"{name!r} is reserved for the head group")
        return name

    @field_validator("max_replicas")
    @classmethod
    def _max_at_least_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"must be >= minReplicas ({value} < {low})")
        return value

    @field_validator("memory_target_fraction")
    @classmethod
    def _fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], got {value:g}")
        return value

    _params = field_validator("ray_start_params")(check_params)

    @model_validator(mode="after")
    def _resources(self) -> WorkerGroupSpec:
        if not can_run_work(self._derive()):
            raise ValueError(
                f"group {self.group_name!r} has no CPU, GPU, memory or custom resources, so "
                "it could never run anything; set rayStartParams num-cpus or the container's "
                "resources.limits"
            )
        return self

    @property
    def desired_replicas(self) -> int:
        """``replicas`` (absent: ``minReplicas``) clamped into [min, max], as KubeRay does."""
        wanted = self.min_replicas if self.replicas is None else self.replicas
        return min(max(wanted, self.min_replicas), self.max_replicas)

    @property
    def pod_labels(self) -> dict[str, str]:
        """The pod template's ``metadata.labels``."""
        return dict(self.template.metadata.labels)

    @property
    def ray_labels(self) -> dict[str, str]:
        """The Ray labels every node of this group gets (besides rayscale's own and
        ``ray.io/node-id``): what a label selector can tell about a node to come."""
        return self._ray_labels(self.group_name)


def _duplicate_names(groups: Any) -> list[tuple[int, str, int]]:
    """``(index, name, first index)`` of each repeated groupName in the raw list."""
    if not isinstance(groups, list):
        return []
    first: dict[str, int] = {}
    out = []
    for i, group in enumerate(groups):
        name = group.get("groupName") if isinstance(group, dict) else None
        if isinstance(group, WorkerGroupSpec):
            name = group.group_name
        if not isinstance(name, str) or not name:
            continue
        if name in first:
            out.append((i, name, first[name]))
        first.setdefault(name, i)
    return out


class RayClusterSpec(KubeModel):
    """``spec`` of a RayCluster."""

    ray_version: str | None = None
    suspend: bool = False
    managed_by: str | None = Field(
        default=None, json_schema_extra={"x-kubernetes-validations": MANAGED_BY_RULES})
    enable_in_tree_autoscaling: bool = False
    autoscaler_options: AutoscalerOptions = Field(default_factory=AutoscalerOptions)
    upgrade_strategy: UpgradeStrategy | None = None
    auth_options: AuthOptions | None = None
    gcs_fault_tolerance_options: GcsFaultToleranceOptions | None = None
    history_server_options: dict[str, Any] | None = None
    network_policy: dict[str, Any] | None = None
    tls_options: dict[str, Any] | None = None
    head_service_annotations: dict[str, str] = Field(default_factory=dict)
    head_group_spec: HeadGroupSpec
    worker_group_specs: list[WorkerGroupSpec] = Field(default_factory=list)

    @field_validator("auth_options")
    @classmethod
    def _auth(cls, auth: AuthOptions | None, info: ValidationInfo) -> AuthOptions | None:
        """KubeRay checks these in its controller (an Event, no reconcile), not at
        admission; rayscale checks them wherever a spec is read (the operator, `up`)."""
        if "ray_version" not in info.data:  # invalid: reported as such already
            return auth
        problems = check_auth_options(auth, info.data["ray_version"])
        if problems:
            raise field_errors("authOptions", problems)
        return auth

    @property
    def token_auth(self) -> bool:
        """``authOptions.mode: token``."""
        return self.auth_options is not None and self.auth_options.token_auth

    @field_validator("worker_group_specs", mode="wrap")
    @classmethod
    def _unique_group_names(
        cls, groups: Any, handler: ValidatorFunctionWrapHandler
    ) -> list[WorkerGroupSpec]:
        """Duplicates are reported even when a group is bad in other ways too."""
        duplicates = _duplicate_names(groups)
        found: list[InitErrorDetails] = []
        result: list[WorkerGroupSpec] = []
        try:
            result = handler(groups)
        except ValidationError as exc:
            found = _details(exc)
        if not duplicates and not found:
            return result
        for index, name, first in duplicates:
            detail = InitErrorDetails(
                type=own_error(
                    f"duplicate group name {name!r} (also workerGroupSpecs[{first}])"
                ),
                loc=(index, "groupName"),
                input=name,
            )
            # after the group's own problems, before the next group's
            at = next((k for k, d in enumerate(found) if _index(d) > index), len(found))
            found.insert(at, detail)
        raise ValidationError.from_exception_data("workerGroupSpecs", found)


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of ``exc`` as input for a new ValidationError (to add more to them)."""
    out: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        detail = InitErrorDetails(
            type=own_error(ctx["message"]) if err["type"] == "rayscale" else err["type"],
            loc=err["loc"],
            input=err.get("input"),
        )
        if err["type"] != "rayscale" and ctx:
            detail["ctx"] = ctx
        out.append(detail)
    return out


def _index(detail: InitErrorDetails) -> int:
    loc = detail.get("loc") or ()
    return loc[0] if loc and isinstance(loc[0], int) else -1


# ------------------------------------------------------------------- status


class HeadInfo(KubeModel):
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_name: str | None = None
    service_ip: str | None = Field(default=None, alias="serviceIP")
    service_name: str | None = None


RayClusterState = Literal["ready", "suspended", "failed"]
RayClusterConditionType = Literal[
    "RayClusterProvisioned", "HeadPodReady", "ReplicaFailure",
    "RayClusterSuspending", "RayClusterSuspended",
]


class RayClusterStatus(KubeModel):
    """``status`` of a RayCluster, as KubeRay writes it."""

    state: RayClusterState | None = None
    reason: str | None = None
    desired_cpu: str | None = Field(default=None, alias="desiredCPU")
    desired_memory: str | None = None
    desired_gpu: str | None = Field(default=None, alias="desiredGPU")
    desired_tpu: str | None = Field(default=None, alias="desiredTPU")
    ready_worker_replicas: int | None = None
    available_worker_replicas: int | None = None
    desired_worker_replicas: int | None = None
    min_worker_replicas: int | None = None
    max_worker_replicas: int | None = None
    observed_generation: int | None = None
    last_update_time: str | None = None
    state_transition_times: dict[str, str] | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)
    head: HeadInfo = Field(default_factory=HeadInfo)
    conditions: list[Condition] = Field(default_factory=list)


# ----------------------------------------------------------------- resource


class RayCluster(KubeModel):
    """A ``ray.io/v1`` RayCluster."""

    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: RayClusterSpec
    status: RayClusterStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _header_present(cls, data: Any) -> Any:
        # A missing apiVersion/kind gets a message that says what to write, and
        # the rest of the document is still checked.
        if isinstance(data, dict):
            data = {"apiVersion": _ABSENT, "kind": _ABSENT, **data}
        return data

    @field_validator("api_version", mode="before")
    @classmethod
    def _api_version(cls, value: Any) -> Any:
        if value is _ABSENT:
            raise ValueError(f"required (expected {API_VERSIONS[0]!r})")
        if value not in API_VERSIONS:
            expected = " or ".join(repr(v) for v in API_VERSIONS)
            raise ValueError(f"must be {expected}, got {describe(value)}")
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        if value is _ABSENT:
            raise ValueError("required (expected 'RayCluster')")
        if value != "RayCluster":
            raise ValueError(f"must be 'RayCluster', got {describe(value)}")
        return value

    @model_validator(mode="after")
    def _gcs_fault_tolerance(self) -> RayCluster:
        """KubeRay's GCS fault tolerance rules (:mod:`rayscale.api.gcs_ft`): they read the
        annotations and the spec together, so they run once both are valid."""
        problems = gcs_ft.problems(self.spec, self.metadata.annotations)
        if problems:
            raise field_errors("RayCluster", problems)
        return self

    @field_validator("metadata")
    @classmethod
    def _name(cls, metadata: ObjectMeta) -> ObjectMeta:
        name = metadata.name
        if name is None:
            raise field_errors("metadata", [(("name",), "required", None)])
        if not DNS1035_LABEL.fullmatch(name):
            raise field_errors("metadata", [((("name",)), (
                "must be a DNS-1035 label (at most 63 lower-case letters, digits and '-', "
                f"starting with a letter and ending with a letter or digit), got {name!r}"
            ), name)])
        return metadata

    # ---- what rayscale reads most, named once

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def head(self) -> HeadGroupSpec:
        return self.spec.head_group_spec

    @property
    def worker_groups(self) -> list[WorkerGroupSpec]:
        return self.spec.worker_group_specs

    @property
    def upscaling_mode(self) -> UpscalingMode:
        return self.spec.autoscaler_options.upscaling_mode or "Default"

    @property
    def idle_timeout_s(self) -> float:
        """``autoscalerOptions.idleTimeoutSeconds``, default 60 s as in Ray."""
        value = self.spec.autoscaler_options.idle_timeout_seconds
        return DEFAULT_IDLE_TIMEOUT_S if value is None else value

    def group(self, name: str) -> WorkerGroupSpec:
        """The worker group called ``name``; KeyError if there is none."""
        for group in self.spec.worker_group_specs:
            if group.group_name == name:
                return group
        known = ", ".join(g.group_name for g in self.spec.worker_group_specs) or "none"
        raise KeyError(f"no worker group {name!r} in cluster {self.name!r} (groups: {known})")

