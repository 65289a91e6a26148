"""GCS fault tolerance in the pods the operator creates: env, annotations and `ray start`
as KubeRay v1.7's configureGCSFaultTolerance sets them (pod.go, pod_test.go)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rayscale.api import RayCluster
from rayscale.operator import gcs_ft
from rayscale.operator.desired import PodSettings, head_pod, worker_pod
from rayscale.spec import SpecError, parse_cluster_spec

SETTINGS = PodSettings()
UID = "0b6a6d3c-5f1e-4e43-9a1c-3f0c2f9e1a11"
SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}
USER_REF = {"secretKeyRef": {"name": "redis-user-secret", "key": "user"}}


def cluster(ft: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
            head_env: list[dict[str, Any]] | None = None, params: dict[str, str] | None = None,
            worker_env: list[dict[str, Any]] | None = None) -> RayCluster:
    head: dict[str, Any] = {"name": "ray-head", "image": "rayproject/ray:2.52.0"}
    if head_env is not None:
        head["env"] = head_env
    worker: dict[str, Any] = {"name": "ray-worker", "image": "rayproject/ray:2.52.0",
                              "resources": {"limits": {"cpu": "1"}}}
    if worker_env is not None:
        worker["env"] = worker_env
    doc: dict[str, Any] = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "raycluster-external-redis", "namespace": "ns1", "uid": UID,
                     "annotations": annotations or {}},
        "spec": {
            "rayVersion": "2.52.0",
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0", **(params or {})},
                              "template": {"spec": {"containers": [head]}}},
            "workerGroupSpecs": [{"groupName": "small-group", "replicas": 1, "minReplicas": 1,
                                  "maxReplicas": 10, "rayStartParams": {},
                                  "template": {"spec": {"containers": [worker]}}}],
        },
    }
    if ft is not None:
        doc["spec"]["gcsFaultToleranceOptions"] = ft
    return parse_cluster_spec(doc)


def env_list(pod: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = pod["spec"]["containers"][0].get("env", [])
    return env


def env_named(pod: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in env_list(pod) if e["name"] == name]


def one_env(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = env_named(pod, name)
    assert len(found) == 1, (name, found)
    return found[0]


def command(pod: dict[str, Any]) -> list[str]:
    argv: list[str] = pod["spec"]["containers"][0]["command"]
    return argv


def pods(spec: RayCluster) -> tuple[dict[str, Any], dict[str, Any]]:
    return head_pod(spec, SETTINGS), worker_pod(spec, spec.worker_groups[0], SETTINGS)


FT_NAMES = {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME",
            "RAY_external_storage_namespace", "RAY_gcs_rpc_server_reconnect_timeout_s"}


def test_without_fault_tolerance_the_head_says_so_and_nothing_else_changes() -> None:
    head, worker = pods(cluster())
    assert head["metadata"]["annotations"] == {"ray.io/ft-enabled": "false"}
    assert "ray.io/ft-enabled" not in worker["metadata"]["annotations"]  # head only, as KubeRay
    for pod in (head, worker):
        assert not FT_NAMES & {e["name"] for e in env_list(pod)}
        assert not any(a.startswith("--redis-") for a in command(pod))


def test_the_options_with_a_secret_password_never_put_the_password_in_the_pod() -> None:
    spec = cluster({"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}})
    head, worker = pods(spec)
    assert head["metadata"]["annotations"] == {"ray.io/ft-enabled": "true",
                                               "ray.io/external-storage-namespace": UID}
    assert one_env(head, "RAY_external_storage_namespace") == {
        "name": "RAY_external_storage_namespace", "value": UID}  # the uid: keys never shared
    assert one_env(head, "RAY_REDIS_ADDRESS") == {"name": "RAY_REDIS_ADDRESS",
                                                  "value": "redis:6379"}
    assert one_env(head, "REDIS_PASSWORD") == {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}
    assert not env_named(head, "REDIS_USERNAME")
    # Ray reads the password from the flag; the kubelet expands $(REDIS_PASSWORD)
    assert "--redis-password=$(REDIS_PASSWORD)" in command(head)
    assert not any(a.startswith("--redis-username") for a in command(head))
    assert not env_named(head, "RAY_gcs_rpc_server_reconnect_timeout_s")
    assert one_env(worker, "RAY_gcs_rpc_server_reconnect_timeout_s") == {
        "name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "600"}
    assert not FT_NAMES - {"RAY_gcs_rpc_server_reconnect_timeout_s"} & {
        e["name"] for e in env_list(worker)}
    assert not any(a.startswith("--redis-") for a in command(worker))
    # the reference is copied, not resolved: no password text anywhere in the pod
    assert "value" not in one_env(head, "REDIS_PASSWORD")


def test_a_literal_password_and_user_name_go_to_the_env_as_written() -> None:
    spec = cluster({"redisAddress": "rediss://redis:6380", "externalStorageNamespace": "mine",
                    "redisUsername": {"value": "ray"}, "redisPassword": {"value": "hunter2"}})
    head = head_pod(spec, SETTINGS)
    assert one_env(head, "REDIS_USERNAME") == {"name": "REDIS_USERNAME", "value": "ray"}
    assert one_env(head, "REDIS_PASSWORD") == {"name": "REDIS_PASSWORD", "value": "hunter2"}
    assert one_env(head, "RAY_REDIS_ADDRESS")["value"] == "rediss://redis:6380"
    assert one_env(head, "RAY_external_storage_namespace")["value"] == "mine"
    assert head["metadata"]["annotations"]["ray.io/external-storage-namespace"] == "mine"
    argv = command(head)
    assert "--redis-username=$(REDIS_USERNAME)" in argv
    assert "--redis-password=$(REDIS_PASSWORD)" in argv
    assert not any("hunter2" in a for a in argv)  # the flag refers to the env, never the text


def test_a_secret_user_name_is_kept_as_a_reference() -> None:
    spec = cluster({"redisAddress": "redis:6379", "redisUsername": {"valueFrom": USER_REF},
                    "redisPassword": {"valueFrom": SECRET_REF}})
    head = head_pod(spec, SETTINGS)
    assert one_env(head, "REDIS_USERNAME") == {"name": "REDIS_USERNAME", "valueFrom": USER_REF}
    assert one_env(head, "REDIS_PASSWORD") == {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}


def test_the_pods_do_not_share_the_specs_secret_ref_objects() -> None:
    spec = cluster({"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}})
    head = head_pod(spec, SETTINGS)
    one_env(head, "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] = "changed"
    assert one_env(head_pod(spec, SETTINGS), "REDIS_PASSWORD")["valueFrom"] == SECRET_REF


def test_the_older_form_kuberays_deprecate_gcs_ft_sample() -> None:
    # ray-cluster.deprecate-gcs-ft.yaml: the annotation, the env, `redis-password: $REDIS_PASSWORD`
    spec = cluster(annotations={"ray.io/ft-enabled": "true"},
                   params={"redis-password": "$REDIS_PASSWORD"},
                   head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"},
                             {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}])
    head, worker = pods(spec)
    assert head["metadata"]["annotations"] == {"ray.io/ft-enabled": "true",
                                               "ray.io/external-storage-namespace": UID}
    assert one_env(head, "RAY_REDIS_ADDRESS") == {"name": "RAY_REDIS_ADDRESS",
                                                  "value": "redis:6379"}
    assert one_env(head, "REDIS_PASSWORD") == {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}
    assert one_env(head, "RAY_external_storage_namespace")["value"] == UID
    # bash expanded $REDIS_PASSWORD in KubeRay's shell command; rayscale's argv has no
    # shell, so the reference becomes the kubelet's $(REDIS_PASSWORD)
    argv = command(head)
    assert "--redis-password=$(REDIS_PASSWORD)" in argv
    assert "--redis-password=$REDIS_PASSWORD" not in argv
    assert one_env(worker, "RAY_gcs_rpc_server_reconnect_timeout_s")["value"] == "600"


def test_the_older_form_with_a_braced_reference_and_a_namespace_annotation() -> None:
    spec = cluster(annotations={"ray.io/ft-enabled": "TRUE",
                                "ray.io/external-storage-namespace": "shared-ns"},
                   params={"redis-password": "${REDIS_PASSWORD}"},
                   head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"},
                             {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}])
    head = head_pod(spec, SETTINGS)
    assert "--redis-password=$(REDIS_PASSWORD)" in command(head)
    assert one_env(head, "RAY_external_storage_namespace")["value"] == "shared-ns"
    assert head["metadata"]["annotations"]["ray.io/external-storage-namespace"] == "shared-ns"


def test_the_older_form_with_a_literal_password_param_gets_the_env_kuberay_gives_it() -> None:
    spec = cluster(annotations={"ray.io/ft-enabled": "true"}, params={"redis-password": "pw1"},
                   head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}])
    head = head_pod(spec, SETTINGS)
    assert one_env(head, "REDIS_PASSWORD") == {"name": "REDIS_PASSWORD", "value": "pw1"}
    assert "--redis-password=pw1" in command(head)  # the user's param, as written


def test_what_a_container_sets_itself_wins() -> None:
    spec = cluster(annotations={"ray.io/ft-enabled": "true"},
                   head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"},
                             {"name": "RAY_external_storage_namespace", "value": "own"}],
                   worker_env=[{"name": "RAY_gcs_rpc_server_reconnect_timeout_s",
                                "value": "900"}])
    head, worker = pods(spec)
    assert one_env(head, "RAY_external_storage_namespace")["value"] == "own"
    assert one_env(worker, "RAY_gcs_rpc_server_reconnect_timeout_s")["value"] == "900"


def test_the_manifests_are_json_and_hold_no_secret_value() -> None:
    spec = cluster({"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}})
    text = json.dumps(pods(spec))
    assert "redis-password-secret" in text and "hunter2" not in text


def test_the_embedded_backend_is_refused_by_the_operator_not_by_the_spec() -> None:
    spec = cluster({"backend": "rocksdb"})  # a valid spec: local mode runs it
    problems = gcs_ft.operator_problems(spec)
    assert len(problems) == 1
    assert problems[0].startswith("gcsFaultToleranceOptions.backend: the embedded RocksDB "
                                  "backend ('rocksdb') needs KubeRay's feature gate "
                                  "GCSFaultToleranceEmbeddedStorage")
    assert gcs_ft.operator_problems(cluster({"redisAddress": "redis:6379"})) == []
    assert gcs_ft.operator_problems(cluster()) == []


def test_an_invalid_combination_never_reaches_the_pods() -> None:
    with pytest.raises(SpecError, match=r"gcsFaultToleranceOptions\.redisPassword"):
        cluster({"redisAddress": "redis:6379",
                 "redisPassword": {"value": "x", "valueFrom": SECRET_REF}})
