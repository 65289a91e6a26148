"""A RayCluster document (already loaded from YAML) into a :class:`ClusterSpec`.

Validation walks the raw document once, collecting every problem with its
path, and raises one :class:`~.errors.SpecError` at the end; on error nothing
else happens. Unknown fields are ignored: real KubeRay manifests carry many
(service types, volumes, probes...) that rayscale leaves to Kubernetes.

Rules beyond plain types, and why:

- ``metadata.name`` must be a DNS-1035 label (at most 63 lower-case letters,
  digits and ``-``, starting with a letter), the rule KubeRay's
  ``ValidateRayClusterMetadata`` enforces because the name prefixes service
  names; every such name is also a DNS-1123 label.
- ``groupName`` must be a DNS-1123 label (it becomes part of pod names and a
  label value), unique, and not ``headgroup``, which Ray's autoscaler uses
  for the head.
- ``replicas`` outside ``[minReplicas, maxReplicas]`` is not an error: KubeRay
  clamps it, and so do we. ``maxReplicas < minReplicas`` is an error.
- A worker group whose nodes would have no CPU, GPU, memory or custom
  resource could never run anything: an error.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from rayscale.labels import HEAD_GROUP

from .errors import ErrorList, SpecError, describe, index_path, key_path
from .fields import (
    as_mapping,
    get,
    non_negative,
    read_bool,
    read_int,
    read_labels,
    read_list,
    read_mapping,
    read_number,
    read_ray_start_params,
    read_str,
)
from .model import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_REPLICAS,
    ClusterSpec,
    HeadGroupSpec,
    UpscalingMode,
    WorkerGroupSpec,
)
from .resources import can_run_work, collect_ray_resources

API_VERSIONS = ("ray.io/v1", "ray.io/v1alpha1")
KIND = "RayCluster"
UPSCALING_MODES: tuple[UpscalingMode, ...] = ("Default", "Conservative", "Aggressive")
# Ray's KubeRay autoscaler names the head node type this way.
RESERVED_GROUP_NAME = HEAD_GROUP

_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_cluster_spec(doc: Mapping[str, Any]) -> ClusterSpec:
    """Validate a RayCluster document and return its typed model.

    Raises :class:`~.errors.SpecError` listing every problem found.
    """
    errors = ErrorList()
    if not isinstance(doc, Mapping):
        errors.add("document", f"must be a mapping (a RayCluster manifest), got {describe(doc)}")
        raise SpecError(errors.messages)
    _check_header(doc, errors)
    name, namespace = _read_metadata(doc, errors)
    spec = read_mapping(doc, "spec", "", errors, required=True)
    if spec is None:
        raise SpecError(errors.messages)

    # Read in the order KubeRay samples write the fields, so errors are listed
    # roughly as the user reads the file.
    ray_version = read_str(spec, "rayVersion", "", errors)
    suspend = read_bool(spec, "suspend", "", errors, default=False)
    enable_autoscaling = read_bool(spec, "enableInTreeAutoscaling", "", errors, default=False)
    options = read_mapping(spec, "autoscalerOptions", "", errors) or {}
    upscaling_mode = _read_upscaling_mode(options, errors)
    idle = read_number(
        options, "idleTimeoutSeconds", "autoscalerOptions", errors, check=non_negative
    )
    head = _read_head(spec, errors)
    workers = _read_worker_groups(spec, errors)

    errors.raise_if_any()
    assert head is not None  # an unusable head group always records an error
    return ClusterSpec(
        name=name,
        namespace=namespace,
        head=head,
        worker_groups=workers,
        enable_in_tree_autoscaling=enable_autoscaling,
        upscaling_mode=upscaling_mode,
        idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S if idle is None else idle,
        suspend=suspend,
        ray_version=ray_version,
        raw=copy.deepcopy(dict(doc)),
    )


def _check_header(doc: Mapping[str, Any], errors: ErrorList) -> None:
    api_version = get(doc, "apiVersion")
    if api_version is None:
        errors.add("apiVersion", f"required (expected {API_VERSIONS[0]!r})")
    elif api_version not in API_VERSIONS:
        expected = " or ".join(repr(v) for v in API_VERSIONS)
        errors.add("apiVersion", f"must be {expected}, got {describe(api_version)}")
    kind = get(doc, "kind")
    if kind is None:
        errors.add("kind", f"required (expected {KIND!r})")
    elif kind != KIND:
        errors.add("kind", f"must be {KIND!r}, got {describe(kind)}")


def _read_metadata(doc: Mapping[str, Any], errors: ErrorList) -> tuple[str, str]:
    metadata = read_mapping(doc, "metadata", "", errors, required=True)
    if metadata is None:
        return "", "default"
    name = read_str(metadata, "name", "metadata", errors)
    if name is None:
        if get(metadata, "name") is None:
            errors.add("metadata.name", "required")
        name = ""
    elif not _DNS1035_LABEL.fullmatch(name):
        errors.add(
            "metadata.name",
            "must be a DNS-1035 label (at most 63 lower-case letters, digits and '-', "
            f"starting with a letter and ending with a letter or digit), got {name!r}",
        )
    namespace = read_str(metadata, "namespace", "metadata", errors) or "default"
    return name, namespace


def _read_upscaling_mode(options: Mapping[str, Any], errors: ErrorList) -> UpscalingMode:
    mode = get(options, "upscalingMode")
    if mode is None:
        return "Default"
    for allowed in UPSCALING_MODES:
        if mode == allowed:
            return allowed
    errors.add(
        "autoscalerOptions.upscalingMode",
        f"must be one of {', '.join(UPSCALING_MODES)}, got {describe(mode)}",
    )
    return "Default"


def _read_pod(
    group: Mapping[str, Any], path: str, errors: ErrorList
) -> tuple[dict[str, Any], Mapping[str, Any], Mapping[str, Any]] | None:
    """The group's pod template, its ``spec`` and first (Ray) container.

    None when any of them is missing or malformed (errors recorded).
    """
    template = read_mapping(group, "template", path, errors, required=True)
    if template is None:
        return None
    template_path = key_path(path, "template")
    pod_spec = read_mapping(template, "spec", template_path, errors, required=True)
    if pod_spec is None:
        return None
    spec_path = key_path(template_path, "spec")
    containers_path = key_path(spec_path, "containers")
    containers = read_list(pod_spec, "containers", spec_path, errors)
    if not containers:
        if containers is not None or get(pod_spec, "containers") is None:
            errors.add(containers_path, "must list at least one container (the Ray container)")
        return None
    container = as_mapping(containers[0], index_path(containers_path, 0), errors)
    if container is None:
        if containers[0] is None:
            errors.add(index_path(containers_path, 0), "must be a mapping, got null")
        return None
    return copy.deepcopy(dict(template)), pod_spec, container


def _group_resources(
    group: Mapping[str, Any],
    path: str,
    params: dict[str, str],
    container: Mapping[str, Any],
    errors: ErrorList,
) -> dict[str, float]:
    group_resources = read_mapping(group, "resources", path, errors)
    return collect_ray_resources(
        params,
        container,
        errors,
        group_resources=group_resources,
        params_path=key_path(path, "rayStartParams"),
        container_path=index_path(key_path(path, "template", "spec", "containers"), 0),
        group_resources_path=key_path(path, "resources"),
    )


def _read_head(spec: Mapping[str, Any], errors: ErrorList) -> HeadGroupSpec | None:
    path = "headGroupSpec"
    head = read_mapping(spec, path, "", errors, required=True)
    if head is None:
        return None
    before = len(errors)
    params = read_ray_start_params(head, path, errors)
    pod = _read_pod(head, path, errors)
    if pod is None:
        return None
    template, _, container = pod
    resources = _group_resources(head, path, params, container, errors)
    labels = _template_labels(template, path, errors)
    if len(errors) > before:
        return None
    return HeadGroupSpec(
        ray_start_params=params, resources=resources, labels=labels, template=template
    )


def _template_labels(template: Mapping[str, Any], path: str, errors: ErrorList) -> dict[str, str]:
    metadata_path = key_path(path, "template", "metadata")
    metadata = read_mapping(template, "metadata", key_path(path, "template"), errors) or {}
    return read_labels(metadata, "labels", metadata_path, errors)


def _read_worker_groups(spec: Mapping[str, Any], errors: ErrorList) -> list[WorkerGroupSpec]:
    """The valid worker groups (invalid ones only record errors)."""
    groups = read_list(spec, "workerGroupSpecs", "", errors) or []
    first_path_of: dict[str, str] = {}
    result: list[WorkerGroupSpec] = []
    for i, raw in enumerate(groups):
        path = index_path("workerGroupSpecs", i)
        group = as_mapping(raw, path, errors)
        if group is None:
            if raw is None:
                errors.add(path, "must be a mapping, got null")
            continue
        parsed = _read_worker_group(group, path, errors)
        if parsed is not None:
            result.append(parsed)
        name = get(group, "groupName")
        if isinstance(name, str) and name:
            if name in first_path_of:
                errors.add(
                    key_path(path, "groupName"),
                    f"duplicate group name {name!r} (also {first_path_of[name]})",
                )
            first_path_of.setdefault(name, path)
    return result


def _read_group_name(group: Mapping[str, Any], path: str, errors: ErrorList) -> str:
    name_path = key_path(path, "groupName")
    name = read_str(group, "groupName", path, errors)
    if name is None:
        if get(group, "groupName") is None:
            errors.add(name_path, "required")
        return ""
    if not _DNS1123_LABEL.fullmatch(name):
        errors.add(
            name_path,
            "must be a DNS-1123 label (at most 63 lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit), got {name!r}",
        )
    elif name == RESERVED_GROUP_NAME:
        errors.add(name_path, f"{name!r} is reserved for the head group")
    return name


def _read_worker_group(
    group: Mapping[str, Any], path: str, errors: ErrorList
) -> WorkerGroupSpec | None:
    before = len(errors)
    name = _read_group_name(group, path, errors)

    min_replicas = read_int(group, "minReplicas", path, errors, default=0)
    max_replicas = read_int(group, "maxReplicas", path, errors, default=DEFAULT_MAX_REPLICAS)
    replicas = read_int(group, "replicas", path, errors, default=min_replicas)
    if max_replicas < min_replicas:
        errors.add(
            key_path(path, "maxReplicas"),
            f"must be >= minReplicas ({max_replicas} < {min_replicas})",
        )
    replicas = min(max(replicas, min_replicas), max_replicas)
    num_of_hosts = read_int(group, "numOfHosts", path, errors, default=1, minimum=1)

    idle = read_number(group, "idleTimeoutSeconds", path, errors, check=non_negative)
    priority = read_int(group, "priority", path, errors, default=0, minimum=None)
    fraction = read_number(group, "memoryTargetFraction", path, errors, check=_fraction)
    suspend = read_bool(group, "suspend", path, errors, default=False)
    params = read_ray_start_params(group, path, errors)

    pod = _read_pod(group, path, errors)
    if pod is None:
        return None
    template, pod_spec, container = pod
    spec_path = key_path(path, "template", "spec")
    node_selector = read_mapping(pod_spec, "nodeSelector", spec_path, errors) or {}
    tolerations = read_list(pod_spec, "tolerations", spec_path, errors) or []
    labels = _template_labels(template, path, errors)

    resources_errors = len(errors)
    resources = _group_resources(group, path, params, container, errors)
    if len(errors) == resources_errors and not can_run_work(resources):
        errors.add(
            path,
            f"group {name!r} has no CPU, GPU, memory or custom resources, so it could never "
            "run anything; set rayStartParams num-cpus or the container's resources.limits",
        )
    if len(errors) > before:
        return None
    return WorkerGroupSpec(
        name=name,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        num_of_hosts=num_of_hosts,
        ray_start_params=params,
        resources=resources,
        idle_timeout_s=idle,
        priority=priority,
        memory_target_fraction=fraction,
        suspend=suspend,
        labels=labels,
        node_selector=copy.deepcopy(dict(node_selector)),
        tolerations=copy.deepcopy(tolerations),
        template=template,
    )


def _fraction(number: float) -> str | None:
    return None if 0 < number <= 1 else f"must be in (0, 1], got {number:g}"
