"""rayscale.spec: loading KubeRay RayCluster manifests into typed models."""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rayscale.api import (
    QuantityError,
    RayCluster,
    SpecError,
    WorkerGroupSpec,
    parse_quantity,
)
from rayscale.spec import load_cluster_spec, parse_cluster_spec, ray_resources

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GI = 1024**3

BASE = """
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: test-cluster
spec:
  rayVersion: "2.60.0"
  enableInTreeAutoscaling: true
  autoscalerOptions:
    upscalingMode: Default
    idleTimeoutSeconds: 30
  headGroupSpec:
    rayStartParams:
      num-cpus: "0"
    template:
      spec:
        containers:
          - name: ray-head
            image: rayproject/ray:2.60.0
            resources:
              limits: {cpu: "1", memory: 2Gi}
  workerGroupSpecs:
    - groupName: small
      replicas: 1
      minReplicas: 0
      maxReplicas: 4
      rayStartParams: {}
      template:
        metadata:
          labels:
            alibabacloud.com/eci: "true"
        spec:
          containers:
            - name: ray-worker
              image: rayproject/ray:2.60.0
              resources:
                limits: {cpu: "1", memory: 1Gi}
                requests: {cpu: "1", memory: 1Gi}
"""

W0 = ("spec", "workerGroupSpecs", 0)
W0_CONTAINER = (*W0, "template", "spec", "containers", 0)
W0_LIMITS = (*W0_CONTAINER, "resources", "limits")
DELETE = object()


def base_doc() -> dict[str, Any]:
    doc = yaml.safe_load(BASE)
    assert isinstance(doc, dict)
    return doc


def mutate(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set (or, with DELETE, remove) the entry at ``path``."""
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def errors_of(doc: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_cluster_spec(doc)
    return info.value.errors


def group_doc(*, params: dict[str, Any] | None = None, **resources: Any) -> dict[str, Any]:
    """The base document with the worker's rayStartParams/container resources replaced."""
    doc = base_doc()
    mutate(doc, (*W0, "rayStartParams"), params or {})
    mutate(doc, (*W0_CONTAINER, "resources"), resources)
    return doc


# --- examples -------------------------------------------------------------


CLUSTER_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml")
                          if not p.name.startswith(("rayjob", "rayservice")))


@pytest.mark.parametrize("path", CLUSTER_EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    spec = load_cluster_spec(path)
    assert spec.worker_groups
    assert spec.to_manifest()["kind"] == "RayCluster"


def test_example_seeds_autoscaler() -> None:
    spec = load_cluster_spec(EXAMPLES / "seeds-autoscaler.yaml")
    assert spec.name == "raycluster-autoscaler"
    assert spec.namespace == "default"
    assert spec.spec.enable_in_tree_autoscaling is True
    assert spec.upscaling_mode == "Default"
    assert spec.idle_timeout_s == 15
    assert spec.spec.ray_version == "2.60.0"
    assert spec.spec.head_group_spec.ray_resources == {"CPU": 0, "memory": 2 * GI}
    head = spec.spec.head_group_spec
    assert head.ray_start_params == {"num-cpus": "0", "dashboard-host": "0.0.0.0"}
    (group,) = spec.worker_groups
    assert group is spec.group("small-group")
    assert (group.desired_replicas, group.min_replicas, group.max_replicas) == (0, 0, 4)
    assert group.ray_resources == {"CPU": 1, "memory": GI}


def test_example_heterogeneous() -> None:
    spec = load_cluster_spec(EXAMPLES / "heterogeneous.yaml")
    assert spec.name == "hetero"
    assert [g.group_name for g in spec.worker_groups] == ["small", "large"]
    small, large = spec.group("small"), spec.group("large")
    assert small.ray_resources == {"CPU": 1, "memory": GI}
    assert (small.max_replicas, small.priority) == (3, 10)
    assert large.ray_resources == {"CPU": 2, "memory": 2 * GI, "custom": 1}
    assert (large.max_replicas, large.priority) == (2, 0)


def test_example_fallback() -> None:
    spec = load_cluster_spec(EXAMPLES / "fallback.yaml")
    assert spec.name == "fallback"
    regular, elastic = spec.group("regular"), spec.group("elastic")
    assert (regular.priority, regular.max_replicas) == (10, 2)
    assert (elastic.priority, elastic.max_replicas) == (0, 4)
    assert regular.ray_resources["CPU"] == elastic.ray_resources["CPU"] == 1
    assert elastic.pod_labels["alibabacloud.com/eci"] == "true"
    assert regular.pod_labels == {}
    tolerations = elastic.template.spec.tolerations
    assert tolerations and tolerations[0].operator == "Exists"


# --- the model ------------------------------------------------------------


def test_defaults() -> None:
    doc = base_doc()
    del doc["spec"]["autoscalerOptions"]
    del doc["spec"]["enableInTreeAutoscaling"]
    group = doc["spec"]["workerGroupSpecs"][0]
    for key in ("replicas", "minReplicas", "maxReplicas"):
        del group[key]
    spec = parse_cluster_spec(doc)
    assert spec.spec.enable_in_tree_autoscaling is False
    assert spec.upscaling_mode == "Default"
    assert spec.idle_timeout_s == 60
    assert spec.spec.suspend is False
    worker = spec.group("small")
    assert (worker.desired_replicas, worker.min_replicas, worker.max_replicas) == (0, 0, 2147483647)
    assert worker.priority == 0
    assert worker.idle_timeout_seconds is None
    assert worker.memory_target_fraction is None
    assert worker.num_of_hosts == 1


def test_group_fields() -> None:
    doc = base_doc()
    group = doc["spec"]["workerGroupSpecs"][0]
    group.update(
        idleTimeoutSeconds=5,
        priority=-3,
        memoryTargetFraction=0.8,
        suspend=True,
        numOfHosts=2,
    )
    group["template"]["spec"]["nodeSelector"] = {"pool": "spot"}
    doc["metadata"]["namespace"] = "ml"
    doc["spec"]["suspend"] = True
    spec = parse_cluster_spec(doc)
    worker = spec.group("small")
    assert worker.idle_timeout_seconds == 5
    assert worker.priority == -3
    assert worker.memory_target_fraction == 0.8
    assert worker.suspend is True
    assert worker.num_of_hosts == 2
    assert worker.template.spec.node_selector == {"pool": "spot"}
    assert worker.pod_labels == {"alibabacloud.com/eci": "true"}
    assert worker.template.spec.containers[0].name == "ray-worker"
    assert spec.namespace == "ml"
    assert spec.spec.suspend is True


def test_upscaling_modes_and_v1alpha1() -> None:
    for mode in ("Default", "Conservative", "Aggressive"):
        doc = base_doc()
        doc["apiVersion"] = "ray.io/v1alpha1"
        doc["spec"]["autoscalerOptions"]["upscalingMode"] = mode
        assert parse_cluster_spec(doc).upscaling_mode == mode


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [(None, 1), (0, 1), (2, 2), (9, 3)],
    ids=["absent-is-min", "below-min", "inside", "above-max"],
)
def test_replicas_default_to_min_and_are_clamped(replicas: int | None, expected: int) -> None:
    doc = base_doc()
    group = doc["spec"]["workerGroupSpecs"][0]
    group.update(minReplicas=1, maxReplicas=3)
    if replicas is None:
        del group["replicas"]
    else:
        group["replicas"] = replicas
    assert parse_cluster_spec(doc).group("small").desired_replicas == expected


def test_ray_start_params_are_stored_as_strings() -> None:
    doc = base_doc()
    mutate(doc, (*W0, "rayStartParams"),
           {"num-cpus": 2, "block": True, "system-reserved-cpu": 1.5, "dashboard-host": None})
    params = parse_cluster_spec(doc).group("small").ray_start_params
    assert params == {"num-cpus": "2", "block": "true", "system-reserved-cpu": "1.5",
                      "dashboard-host": ""}


def test_group_lookup_error_names_known_groups() -> None:
    spec = parse_cluster_spec(base_doc())
    with pytest.raises(KeyError, match="groups: small"):
        spec.group("gpu")


def test_models_are_frozen_and_checked() -> None:
    spec = parse_cluster_spec(base_doc())
    with pytest.raises(ValidationError):
        spec.spec = spec.spec  # type: ignore[misc]
    template = {"spec": {"containers": [{"name": "ray"}]}}
    with pytest.raises(ValidationError):
        WorkerGroupSpec.model_validate({
            "groupName": "g", "minReplicas": 3, "maxReplicas": 2, "replicas": 3,
            "rayStartParams": {"num-cpus": "1"}, "template": template,
        })
    built = RayCluster.model_validate({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "c"},
        "spec": {
            "headGroupSpec": {"template": template},
            "workerGroupSpecs": [{"groupName": "g", "resources": {"CPU": "1"},
                                  "template": template}],
        },
    })
    assert built.group("g").ray_resources == {"CPU": 1.0}


def test_raw_is_a_copy_of_the_document() -> None:
    doc = base_doc()
    spec = parse_cluster_spec(doc)
    doc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 99
    manifest = spec.to_manifest()
    assert manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 4
    assert manifest["metadata"] == {"name": "test-cluster"}


# --- Ray resources --------------------------------------------------------


def test_resources_precedence_params_over_limits_over_requests() -> None:
    container = {
        "resources": {
            "limits": {"cpu": "4", "memory": "4Gi", "nvidia.com/gpu": "2"},
            "requests": {"cpu": "8", "memory": "8Gi", "nvidia.com/gpu": "3"},
        }
    }
    params = {"num-cpus": "1", "num-gpus": "1", "memory": "1000"}
    assert ray_resources(params, container) == {"CPU": 1, "GPU": 1, "memory": 1000}
    assert ray_resources({}, container) == {"CPU": 4, "GPU": 2, "memory": 4 * GI}
    del container["resources"]["limits"]
    assert ray_resources({}, container) == {"CPU": 8, "GPU": 3, "memory": 8 * GI}


def test_resources_precedence_per_resource() -> None:
    container = {"resources": {"limits": {"cpu": "2"}, "requests": {"memory": "1Gi"}}}
    assert ray_resources({"num-gpus": "1"}, container) == {"CPU": 2, "GPU": 1, "memory": GI}


def test_group_resources_field_wins() -> None:
    """KubeRay v1.5 top-level group ``resources`` (read first by Ray 2.60)."""
    container = {"resources": {"limits": {"cpu": "4", "memory": "4Gi"}}}
    params = {"num-cpus": "2", "resources": '{"ignored": 1}'}
    group = {"CPU": "3", "memory": "2Gi", "accel": "2"}
    assert ray_resources(params, container, group) == {"CPU": 3, "memory": 2 * GI, "accel": 2}


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [("500m", 1), ("1500m", 2), ("2.5", 3), ("2", 2), (2, 2), (0.25, 1), ("100m", 1)],
)
def test_fractional_cpu_rounds_up_like_kuberay(cpu: object, expected: int) -> None:
    assert ray_resources({}, {"resources": {"limits": {"cpu": cpu}}}) == {"CPU": expected}


def test_gpu_sources() -> None:
    assert ray_resources({}, {"resources": {"limits": {"cpu": 1, "amd.com/gpu": 2}}}) == {
        "CPU": 1,
        "GPU": 2,
    }
    # A zero GPU limit is skipped, as Ray does; a zero GPU is left out.
    zero = {"resources": {"limits": {"cpu": 1, "nvidia.com/gpu": 0}}}
    assert ray_resources({}, zero) == {"CPU": 1}
    assert ray_resources({"num-gpus": "0"}, {"resources": {"limits": {"cpu": 1}}}) == {"CPU": 1}


def test_tpu_from_limits() -> None:
    container = {"resources": {"limits": {"cpu": 8, "google.com/tpu": 4}}}
    assert ray_resources({}, container) == {"CPU": 8, "TPU": 4}


def test_explicit_zero_cpu_is_kept_but_absent_cpu_is_absent() -> None:
    assert ray_resources({"num-cpus": "0"}, {}) == {"CPU": 0}
    assert ray_resources({}, {"resources": {"limits": {"memory": "1Gi"}}}) == {"memory": GI}


@pytest.mark.parametrize(
    "text",
    [
        '{"TPU": 4, "custom": 1}',
        '"{\\"TPU\\": 4, \\"custom\\": 1}"',  # KubeRay's documented shell-quoted form
        '\'{"TPU": 4, "custom": 1}\'',
        '{\\"TPU\\": 4, \\"custom\\": 1}',
    ],
    ids=["plain", "kuberay-quoted", "single-quoted", "escaped"],
)
def test_custom_resources_json_forms(text: str) -> None:
    assert ray_resources({"num-cpus": "1", "resources": text}, {}) == {
        "CPU": 1,
        "TPU": 4,
        "custom": 1,
    }


def test_custom_resources_fractional_zero_and_object_store() -> None:
    params = {"resources": '{"a": 0.5, "b": 0}', "object-store-memory": "1000000"}
    assert ray_resources(params, {}) == {"a": 0.5, "object_store_memory": 1e6}


def test_ray_resources_reports_relative_paths() -> None:
    with pytest.raises(SpecError) as info:
        ray_resources({"num-cpus": "x"}, {"resources": {"limits": {"cpu": "1K"}}})
    assert info.value.errors == [
        "rayStartParams.num-cpus: must be a non-negative integer, got 'x'",
        "container.resources.limits.cpu: invalid quantity '1K'",
    ]


# --- quantities -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("2.5", Decimal("2.5")),
        (".5", Decimal("0.5")),
        ("1Gi", Decimal(GI)),
        ("1G", Decimal(10**9)),
        ("512Mi", Decimal(512 * 1024**2)),
        ("0.5Gi", Decimal(GI // 2)),
        ("1e9", Decimal(10**9)),
        ("1E3", Decimal(1000)),
        ("1000000k", Decimal(10**9)),
        ("1Ki", Decimal(1024)),
        ("1E", Decimal(10**18)),
        ("100n", Decimal("1E-7")),
        ("+2", Decimal(2)),
        ("-1", Decimal(-1)),
        (3, Decimal(3)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_quantity(text: object, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text", ["abc", "", "1K", "1Gb", "1 Gi", "Gi", "1.2.3", "1e", "0x10", "1e500", True, None]
)
def test_invalid_quantity(text: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_memory_quantities_become_bytes() -> None:
    for text, expected in [("1Gi", GI), ("1G", 10**9), ("1e9", 10**9), ("1000000k", 10**9)]:
        assert ray_resources({}, {"resources": {"limits": {"memory": text}}}) == {
            "memory": expected
        }


@given(
    number=st.integers(min_value=0, max_value=10**6),
    suffix=st.sampled_from(["", "k", "M", "G", "Ki", "Mi", "Gi", "m"]),
)
def test_quantity_scaling_property(number: int, suffix: str) -> None:
    scale = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    expected = Decimal(number) / 1000 if suffix == "m" else Decimal(number * scale[suffix])
    assert parse_quantity(f"{number}{suffix}") == expected


# --- validation errors ----------------------------------------------------

BAD_CASES: list[tuple[str, tuple[Any, ...], Any, str]] = [
    (
        "unknown-ray-start-option",
        (*W0, "rayStartParams", "num-cpu"),
        "1",
        "workerGroupSpecs[0].rayStartParams.num-cpu: not a `ray start` option of Ray 2.60.0 "
        "(did you mean 'num-cpus'?)",
    ),
    (
        "shell-in-option-name",
        (*W0, "rayStartParams", "block; rm -rf ~"),
        "true",
        "workerGroupSpecs[0].rayStartParams[block; rm -rf ~]: not a `ray start` option of "
        "Ray 2.60.0",
    ),
    (
        "port-not-integer",
        ("spec", "headGroupSpec", "rayStartParams", "dashboard-port"),
        "8265; echo",
        "headGroupSpec.rayStartParams.dashboard-port: must be an integer (64-bit), "
        "got '8265; echo'",
    ),
    (
        "port-out-of-range",
        (*W0, "rayStartParams", "node-manager-port"),
        "70000",
        "workerGroupSpecs[0].rayStartParams.node-manager-port: must be a port number "
        "(0-65535), got '70000'",
    ),
    (
        "flag-not-boolean",
        (*W0, "rayStartParams", "disable-usage-stats"),
        "yes please",
        "workerGroupSpecs[0].rayStartParams.disable-usage-stats: a flag: must be \"true\" or "
        "\"false\", got 'yes please'",
    ),
    (
        "choice",
        (*W0, "rayStartParams", "log-style"),
        "fancy",
        "workerGroupSpecs[0].rayStartParams.log-style: must be one of auto, record, pretty, "
        "got 'fancy'",
    ),
    (
        "newline-in-value",
        ("spec", "headGroupSpec", "rayStartParams", "dashboard-host"),
        "127.0.0.1\n--head",
        "headGroupSpec.rayStartParams.dashboard-host: must not contain control characters "
        "(newlines...)",
    ),
    (
        "api-version",
        ("apiVersion",),
        "v1",
        "apiVersion: must be 'ray.io/v1' or 'ray.io/v1alpha1', got string 'v1'",
    ),
    ("no-api-version", ("apiVersion",), DELETE, "apiVersion: required (expected 'ray.io/v1')"),
    ("kind", ("kind",), "RayJob", "kind: must be 'RayCluster', got string 'RayJob'"),
    ("no-name", ("metadata", "name"), DELETE, "metadata.name: required"),
    (
        "bad-name",
        ("metadata", "name"),
        "My_Cluster",
        "metadata.name: must be a DNS-1035 label (at most 63 lower-case letters, digits and "
        "'-', starting with a letter and ending with a letter or digit), got 'My_Cluster'",
    ),
    (
        "numeric-name",
        ("metadata", "name"),
        123,
        "metadata.name: must be a string, got number 123 (quote it in YAML)",
    ),
    ("no-metadata", ("metadata",), DELETE, "metadata: required"),
    ("no-spec", ("spec",), DELETE, "spec: required"),
    ("no-head", ("spec", "headGroupSpec"), DELETE, "headGroupSpec: required"),
    (
        "no-head-template",
        ("spec", "headGroupSpec", "template"),
        DELETE,
        "headGroupSpec.template: required",
    ),
    (
        "no-containers",
        (*W0, "template", "spec", "containers"),
        DELETE,
        "workerGroupSpecs[0].template.spec.containers: "
        "must list at least one container (the Ray container)",
    ),
    (
        "empty-containers",
        (*W0, "template", "spec", "containers"),
        [],
        "workerGroupSpecs[0].template.spec.containers: "
        "must list at least one container (the Ray container)",
    ),
    (
        "no-pod-spec",
        (*W0, "template", "spec"),
        DELETE,
        "workerGroupSpecs[0].template.spec: required",
    ),
    (
        "worker-groups-not-list",
        ("spec", "workerGroupSpecs"),
        {"groupName": "x"},
        "workerGroupSpecs: must be a list, got a mapping",
    ),
    (
        "string-replicas",
        (*W0, "replicas"),
        "2",
        "workerGroupSpecs[0].replicas: must be an integer, got string '2'",
    ),
    (
        "negative-min",
        (*W0, "minReplicas"),
        -1,
        "workerGroupSpecs[0].minReplicas: must not be negative, got -1",
    ),
    (
        "float-max",
        (*W0, "maxReplicas"),
        2.5,
        "workerGroupSpecs[0].maxReplicas: must be an integer, got number 2.5",
    ),
    (
        "huge-max",
        (*W0, "maxReplicas"),
        2**31,
        "workerGroupSpecs[0].maxReplicas: must be <= 2147483647, got 2147483648",
    ),
    ("no-group-name", (*W0, "groupName"), DELETE, "workerGroupSpecs[0].groupName: required"),
    (
        "bad-group-name",
        (*W0, "groupName"),
        "Small_Group",
        "workerGroupSpecs[0].groupName: must be a DNS-1123 label (at most 63 lower-case "
        "letters, digits and '-', starting and ending with a letter or digit), got 'Small_Group'",
    ),
    (
        "reserved-group-name",
        (*W0, "groupName"),
        "headgroup",
        "workerGroupSpecs[0].groupName: 'headgroup' is reserved for the head group",
    ),
    (
        "bad-cpu-quantity",
        (*W0_LIMITS, "cpu"),
        "abc",
        "workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu: "
        "invalid quantity 'abc'",
    ),
    (
        "bad-memory-quantity",
        (*W0_LIMITS, "memory"),
        "1Gb",
        "workerGroupSpecs[0].template.spec.containers[0].resources.limits.memory: "
        "invalid quantity '1Gb'",
    ),
    (
        "bad-gpu-quantity",
        (*W0_LIMITS, "nvidia.com/gpu"),
        "one",
        "workerGroupSpecs[0].template.spec.containers[0].resources.limits[nvidia.com/gpu]: "
        "invalid quantity 'one'",
    ),
    (
        "negative-request",
        (*W0_CONTAINER, "resources", "requests", "cpu"),
        "-1",
        "workerGroupSpecs[0].template.spec.containers[0].resources.requests.cpu: "
        "must not be negative, got '-1'",
    ),
    (
        "bad-head-quantity",
        ("spec", "headGroupSpec", "template", "spec", "containers", 0, "resources"),
        {"limits": {"memory": "lots"}},
        "headGroupSpec.template.spec.containers[0].resources.limits.memory: "
        "invalid quantity 'lots'",
    ),
    (
        "bad-num-cpus",
        (*W0, "rayStartParams", "num-cpus"),
        "two",
        "workerGroupSpecs[0].rayStartParams.num-cpus: must be a non-negative integer, got 'two'",
    ),
    (
        "fractional-num-gpus",
        (*W0, "rayStartParams", "num-gpus"),
        "1.5",
        "workerGroupSpecs[0].rayStartParams.num-gpus: must be a non-negative integer, got '1.5'",
    ),
    (
        "quantity-memory-param",
        (*W0, "rayStartParams", "memory"),
        "1Gi",
        "workerGroupSpecs[0].rayStartParams.memory: "
        "must be a non-negative integer (bytes), got '1Gi'",
    ),
    (
        "bad-head-num-cpus",
        ("spec", "headGroupSpec", "rayStartParams", "num-cpus"),
        "-1",
        "headGroupSpec.rayStartParams.num-cpus: must be a non-negative integer, got '-1'",
    ),
    (
        "bad-resources-json",
        (*W0, "rayStartParams", "resources"),
        "{custom: 1}",
        "workerGroupSpecs[0].rayStartParams.resources: must be a JSON object like "
        "'{\"custom\": 1}': Expecting property name enclosed in double quotes in '{custom: 1}'",
    ),
    (
        "resources-json-not-object",
        (*W0, "rayStartParams", "resources"),
        "[1]",
        "workerGroupSpecs[0].rayStartParams.resources: must be a JSON object like "
        "'{\"custom\": 1}', got a list",
    ),
    (
        "resources-json-negative",
        (*W0, "rayStartParams", "resources"),
        '{"custom": -1}',
        "workerGroupSpecs[0].rayStartParams.resources: "
        "resource 'custom' must be a non-negative number, got number -1",
    ),
    (
        "resources-json-cpu",
        (*W0, "rayStartParams", "resources"),
        '{"CPU": 2}',
        "workerGroupSpecs[0].rayStartParams.resources: "
        "'CPU' cannot be a custom resource; use the 'num-cpus' param",
    ),
    (
        "params-not-mapping",
        (*W0, "rayStartParams"),
        ["num-cpus=1"],
        "workerGroupSpecs[0].rayStartParams: must be a mapping, got a list",
    ),
    (
        "upscaling-mode",
        ("spec", "autoscalerOptions", "upscalingMode"),
        "Fast",
        "autoscalerOptions.upscalingMode: "
        "must be one of Default, Conservative, Aggressive, got string 'Fast'",
    ),
    (
        "negative-idle",
        ("spec", "autoscalerOptions", "idleTimeoutSeconds"),
        -5,
        "autoscalerOptions.idleTimeoutSeconds: must not be negative, got -5",
    ),
    (
        "negative-group-idle",
        (*W0, "idleTimeoutSeconds"),
        -1.5,
        "workerGroupSpecs[0].idleTimeoutSeconds: must not be negative, got -1.5",
    ),
    (
        "string-group-idle",
        (*W0, "idleTimeoutSeconds"),
        "10s",
        "workerGroupSpecs[0].idleTimeoutSeconds: must be a number, got string '10s'",
    ),
    (
        "fraction-too-big",
        (*W0, "memoryTargetFraction"),
        1.5,
        "workerGroupSpecs[0].memoryTargetFraction: must be in (0, 1], got 1.5",
    ),
    (
        "fraction-zero",
        (*W0, "memoryTargetFraction"),
        0,
        "workerGroupSpecs[0].memoryTargetFraction: must be in (0, 1], got 0",
    ),
    (
        "priority-string",
        (*W0, "priority"),
        "high",
        "workerGroupSpecs[0].priority: must be an integer, got string 'high'",
    ),
    (
        "priority-float",
        (*W0, "priority"),
        1.5,
        "workerGroupSpecs[0].priority: must be an integer, got number 1.5",
    ),
    (
        "num-of-hosts",
        (*W0, "numOfHosts"),
        0,
        "workerGroupSpecs[0].numOfHosts: must be >= 1, got 0",
    ),
    (
        "no-worker-resources",
        (*W0_CONTAINER, "resources"),
        {},
        "workerGroupSpecs[0]: group 'small' has no CPU, GPU, memory or custom resources, so "
        "it could never run anything; set rayStartParams num-cpus or the container's "
        "resources.limits",
    ),
    (
        "autoscaling-not-bool",
        ("spec", "enableInTreeAutoscaling"),
        "yes",
        "enableInTreeAutoscaling: must be a boolean, got string 'yes'",
    ),
    (
        "unquoted-label",
        (*W0, "template", "metadata", "labels", "alibabacloud.com/eci"),
        True,
        "workerGroupSpecs[0].template.metadata.labels[alibabacloud.com/eci]: "
        "must be a string, got boolean true (quote it in YAML)",
    ),
    (
        "tolerations-not-list",
        (*W0, "template", "spec", "tolerations"),
        {"key": "x"},
        "workerGroupSpecs[0].template.spec.tolerations: must be a list, got a mapping",
    ),
    (
        "unquoted-ray-version",
        ("spec", "rayVersion"),
        2.6,
        "rayVersion: must be a string, got number 2.6 (quote it in YAML)",
    ),
    (
        "group-not-mapping",
        (*W0,),
        "small",
        "workerGroupSpecs[0]: must be a mapping, got string 'small'",
    ),
    (
        "ray-start-labels-worker",  # KubeRay v1.7 refuses it too
        (*W0, "rayStartParams", "labels"),
        "cpu-family=intel",
        "workerGroupSpecs[0].rayStartParams.labels: not supported; put the group's Ray node "
        "labels in its top-level `labels` field instead (as KubeRay v1.7 requires)",
    ),
    (
        "ray-start-labels-head",
        ("spec", "headGroupSpec", "rayStartParams", "labels"),
        "",
        "headGroupSpec.rayStartParams.labels: not supported; put the group's Ray node "
        "labels in its top-level `labels` field instead (as KubeRay v1.7 requires)",
    ),
    (
        "label-value-not-string",
        (*W0, "labels"),
        {"gpus": 1},
        "workerGroupSpecs[0].labels.gpus: must be a string, got number 1 (quote it in YAML)",
    ),
    (
        "head-label-key",
        ("spec", "headGroupSpec", "labels"),
        {"region/": "x"},
        "headGroupSpec.labels[region/]: invalid label key: the name part must not be empty",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_document_names_the_path(path: tuple[Any, ...], value: Any, expected: str) -> None:
    doc = base_doc()
    mutate(doc, path, value)
    assert errors_of(doc) == [expected]


def test_group_labels_follow_kubernetes_label_syntax_every_problem_named() -> None:
    doc = base_doc()
    mutate(doc, (*W0, "labels"), {
        "cpu-family": "intel", "ray.io/market-type": "spot", "example.com/Zone_A": "",
        "Bad_/x": "v", "a/b/c": "v", "/x": "v", "tier": "-gold", "k" * 64: "v",
        "long": "v" * 64, "ray.io/node-id": "n", "rayscale.io/node": "w-1",
        "rayscale.io/group": "small",
    })
    assert errors_of(doc) == [
        "workerGroupSpecs[0].labels[Bad_/x]: invalid label key: the prefix 'Bad_' must be a "
        "DNS subdomain (at most 253 characters: lower-case letters, digits, '-' and '.', "
        "starting and ending with a letter or digit)",
        "workerGroupSpecs[0].labels[a/b/c]: invalid label key: a label key is an optional DNS "
        "subdomain prefix and '/', then a name",
        "workerGroupSpecs[0].labels[/x]: invalid label key: the prefix before '/' must not be "
        "empty",
        "workerGroupSpecs[0].labels.tier: invalid label value '-gold': must be empty or at most "
        "63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or "
        "digit",
        f"workerGroupSpecs[0].labels.{'k' * 64}: invalid label key: the name part has 64 "
        "characters, at most 63",
        "workerGroupSpecs[0].labels.long: invalid label value: 64 characters, at most 63",
        "workerGroupSpecs[0].labels[ray.io/node-id]: reserved: Ray sets it to the node's id "
        "(its raylet aborts if ray start sets it)",
        "workerGroupSpecs[0].labels[rayscale.io/node]: reserved: rayscale sets it on every "
        "node: it maps a Ray node to its process or pod",
        "workerGroupSpecs[0].labels[rayscale.io/group]: reserved: rayscale sets it on every "
        "node: it maps a Ray node to its group",
    ]


def test_ray_labels_are_the_group_labels_over_rays_node_group() -> None:
    doc = base_doc()
    mutate(doc, (*W0, "labels"), {"cpu-family": "intel", "ray.io/market-type": "spot"})
    mutate(doc, ("spec", "headGroupSpec", "labels"), {"ray.io/node-group": "control"})
    spec = parse_cluster_spec(doc)
    (small,) = spec.worker_groups
    assert small.ray_labels == {"ray.io/node-group": "small", "cpu-family": "intel",
                                "ray.io/market-type": "spot"}
    assert small.pod_labels == {"alibabacloud.com/eci": "true"}  # not Ray's
    # a group's own ray.io/node-group replaces Ray's default, as in `ray start`
    assert spec.head.ray_labels == {"ray.io/node-group": "control"}
    assert base_doc_spec().head.ray_labels == {"ray.io/node-group": "headgroup"}


def base_doc_spec() -> RayCluster:
    return parse_cluster_spec(base_doc())


def test_max_below_min_exact_message() -> None:
    doc = base_doc()
    doc["spec"]["workerGroupSpecs"].append(copy.deepcopy(doc["spec"]["workerGroupSpecs"][0]))
    second = doc["spec"]["workerGroupSpecs"][1]
    second.update(groupName="big", minReplicas=3, maxReplicas=2)
    with pytest.raises(SpecError) as info:
        parse_cluster_spec(doc)
    assert str(info.value) == "workerGroupSpecs[1].maxReplicas: must be >= minReplicas (2 < 3)"
    assert isinstance(info.value, ValueError)


def test_duplicate_group_name() -> None:
    doc = base_doc()
    groups = doc["spec"]["workerGroupSpecs"]
    groups.append(copy.deepcopy(groups[0]))
    groups[1]["maxReplicas"] = "many"  # the duplicate is reported even if the group is bad
    assert errors_of(doc) == [
        "workerGroupSpecs[1].maxReplicas: must be an integer, got string 'many'",
        "workerGroupSpecs[1].groupName: duplicate group name 'small' (also workerGroupSpecs[0])",
    ]


def test_not_a_mapping() -> None:
    assert errors_of(["a"]) == ["document: must be a mapping (a RayCluster manifest), got a list"]


def test_all_errors_are_reported_together() -> None:
    doc = base_doc()
    doc["kind"] = "RayService"
    mutate(doc, (*W0, "minReplicas"), 5)
    mutate(doc, (*W0, "maxReplicas"), 2)
    mutate(doc, (*W0_LIMITS, "cpu"), "abc")
    mutate(doc, ("spec", "autoscalerOptions", "upscalingMode"), "Turbo")
    mutate(doc, ("spec", "headGroupSpec", "rayStartParams", "num-cpus"), "none")
    with pytest.raises(SpecError) as info:
        parse_cluster_spec(doc)
    error = info.value
    assert error.errors == [
        "kind: must be 'RayCluster', got string 'RayService'",
        "autoscalerOptions.upscalingMode: "
        "must be one of Default, Conservative, Aggressive, got string 'Turbo'",
        "headGroupSpec.rayStartParams.num-cpus: must be a non-negative integer, got 'none'",
        "workerGroupSpecs[0].maxReplicas: must be >= minReplicas (2 < 5)",
        "workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu: "
        "invalid quantity 'abc'",
    ]
    assert str(error) == "\n".join(error.errors)


def test_spec_error_pickles() -> None:
    error = SpecError(["a: one", "b: two"])
    again = pickle.loads(pickle.dumps(error))
    assert again.errors == ["a: one", "b: two"]
    assert str(again) == "a: one\nb: two"


def test_unknown_fields_are_allowed() -> None:
    doc = base_doc()
    doc["spec"]["headGroupSpec"]["serviceType"] = "ClusterIP"
    doc["spec"]["futureField"] = {"anything": [1, 2]}
    mutate(doc, (*W0, "scaleStrategy"), {"workersToDelete": ["pod-a"]})
    cluster = parse_cluster_spec(doc)
    assert cluster.to_manifest()["spec"]["futureField"] == {"anything": [1, 2]}
    assert cluster.group("small").scale_strategy.workers_to_delete == ["pod-a"]


# --- authOptions (KubeRay's ValidateRayClusterSpec rules) -------------------


@pytest.mark.parametrize(
    ("auth", "version", "expected"),
    [
        ({"mode": "token"}, "2.40.0",
         "authOptions.mode: 'token' needs Ray 2.52.0 or later, but rayVersion is '2.40.0'"),
        ({"mode": "token"}, DELETE,
         "authOptions.mode: 'token' needs rayVersion 2.52.0 or later; rayVersion is not set"),
        ({"mode": "token"}, "nightly",
         "authOptions.mode: 'token' needs rayVersion 2.52.0 or later; rayVersion 'nightly' "
         "is not a version"),
        ({"mode": "token", "enableK8sTokenAuth": True}, "2.52.0",
         "authOptions.enableK8sTokenAuth: needs Ray 2.55.0 or later, but rayVersion is "
         "'2.52.0'"),
        ({"mode": "token", "enableK8sTokenAuth": True, "secretName": "mine"}, "2.60.0",
         "authOptions.enableK8sTokenAuth: cannot be combined with authOptions.secretName "
         "('mine'): Kubernetes token auth uses ServiceAccount tokens, not a Secret"),
        ({"enableK8sTokenAuth": True}, "2.60.0",
         "authOptions.enableK8sTokenAuth: needs authOptions.mode 'token' (mode is not set)"),
        ({"mode": "disabled", "enableK8sTokenAuth": True}, "2.60.0",
         "authOptions.enableK8sTokenAuth: needs authOptions.mode 'token' "
         "(mode is string 'disabled')"),
        ({"mode": "tokens"}, "2.60.0",
         "authOptions.mode: must be one of disabled, token, got string 'tokens'"),
    ],
)
def test_bad_auth_options_name_the_field(auth: dict[str, Any], version: Any,
                                         expected: str) -> None:
    doc = base_doc()
    doc["spec"]["authOptions"] = auth
    mutate(doc, ("spec", "rayVersion"), version)
    assert errors_of(doc) == [expected]


@pytest.mark.parametrize(
    ("auth", "version"),
    [
        ({"mode": "token"}, "2.52"),  # KubeRay's version.ParseGeneric: two numbers suffice
        ({"mode": "token"}, "v2.53.0-rc1"),
        ({"mode": "token", "secretName": "mine"}, "2.52.0"),
        ({"mode": "token", "enableK8sTokenAuth": True}, "2.55.0"),
        ({"mode": "disabled"}, DELETE),
        ({}, DELETE),  # no mode: KubeRay turns nothing on (its "default token" is not applied)
    ],
    ids=["two-numbers", "prefix-suffix", "secret-name", "k8s", "disabled", "empty"],
)
def test_good_auth_options(auth: dict[str, Any], version: Any) -> None:
    doc = base_doc()
    doc["spec"]["authOptions"] = auth
    mutate(doc, ("spec", "rayVersion"), version)
    cluster = parse_cluster_spec(doc)
    assert cluster.spec.token_auth == (auth.get("mode") == "token")
    assert cluster.to_manifest()["spec"]["authOptions"] == auth


def test_auth_errors_come_with_the_others() -> None:
    doc = base_doc()
    doc["spec"]["authOptions"] = {"mode": "token"}
    doc["spec"]["rayVersion"] = "2.46.0"
    mutate(doc, (*W0, "maxReplicas"), -1)
    assert errors_of(doc) == [
        "authOptions.mode: 'token' needs Ray 2.52.0 or later, but rayVersion is '2.46.0'",
        "workerGroupSpecs[0].maxReplicas: must not be negative, got -1",
    ]


@pytest.mark.parametrize(("kind", "field"), [("RayJob", "rayClusterSpec"),
                                             ("RayService", "rayClusterConfig")])
def test_ray_jobs_and_services_refuse_k8s_token_auth(kind: str, field: str) -> None:
    from rayscale.api import RayJob, RayService
    from rayscale.api.errors import messages

    cluster = base_doc()["spec"]
    cluster["authOptions"] = {"mode": "token", "enableK8sTokenAuth": True}
    model: Any = RayJob if kind == "RayJob" else RayService
    with pytest.raises(ValidationError) as info:
        model.model_validate({"apiVersion": "ray.io/v1", "kind": kind,
                              "metadata": {"name": "x"}, "spec": {field: cluster}})
    assert messages(info.value) == [
        f"{field}.authOptions.enableK8sTokenAuth: not supported for a {kind} "
        "(only a RayCluster may use Kubernetes token auth)"]
    cluster["authOptions"] = {"mode": "token"}
    model.model_validate({"apiVersion": "ray.io/v1", "kind": kind,
                          "metadata": {"name": "x"}, "spec": {field: cluster}})


# --- files ----------------------------------------------------------------


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata:\n  name: broken: yes\nspec: {}\n"
    )
    with pytest.raises(SpecError) as info:
        load_cluster_spec(path)
    assert info.value.errors == [
        f"{path}: invalid YAML at line 4, column 15: mapping values are not allowed here"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty file (expected a RayCluster manifest)"),
        ("# only a comment\n", "empty file (expected a RayCluster manifest)"),
        ("- a\n- b\n", "expected a mapping (a RayCluster manifest), got a list"),
        ("just text\n", "expected a mapping (a RayCluster manifest), got string 'just text'"),
        ("a: 1\n---\nb: 2\n", "expected one YAML document (a RayCluster), found 2"),
    ],
    ids=["empty", "comment-only", "list", "scalar", "two-documents"],
)
def test_unusable_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(content)
    with pytest.raises(SpecError) as info:
        load_cluster_spec(path)
    assert info.value.errors == [f"{path}: {expected}"]


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read file"):
        load_cluster_spec(tmp_path / "nope.yaml")


def test_load_accepts_str_path_and_leading_separator(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("---\n" + BASE)
    assert load_cluster_spec(str(path)).name == "test-cluster"


# --- robustness -----------------------------------------------------------


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        out.append((*prefix, key))
        if isinstance(child, dict | list):
            out.extend(_paths(child, (*prefix, key)))
    return out


_ALL_PATHS = _paths(base_doc())
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["1", "0", "500m", "1Gi", "-1", "{}", '{"a": 1}', "abc", "headgroup"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(_ALL_PATHS), st.one_of(st.just(DELETE), _JSON)), max_size=4
    )
)
def test_any_edit_gives_a_spec_or_a_spec_error(edits: list[tuple[tuple[Any, ...], Any]]) -> None:
    doc = base_doc()
    for path, value in edits:
        try:
            mutate(doc, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced the parent
    try:
        spec = parse_cluster_spec(doc)
    except SpecError as error:
        assert error.errors
        assert all(": " in message for message in error.errors)
    else:
        assert isinstance(spec, RayCluster)
