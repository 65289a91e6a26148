"""KubeRay v1.7's GCS fault tolerance rules for a RayCluster spec (validation.go), each
naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from rayscale.api import RayService, gcs_ft
from rayscale.api.errors import messages
from rayscale.spec import SpecError, parse_cluster_spec
from rayscale.spec.job import parse_job_spec

SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}


def _doc(ft: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
         env: list[dict[str, Any]] | None = None, params: dict[str, str] | None = None,
         **head_extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "ray-head", "image": "rayproject/ray:2.52.0"}
    if env is not None:
        container["env"] = env
    container.update(head_extra.pop("container", {}))
    doc: dict[str, Any] = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "c", "annotations": annotations or {}},
        "spec": {"headGroupSpec": {"rayStartParams": params or {},
                                   "template": {"spec": {"containers": [container],
                                                         **head_extra}}}},
    }
    if ft is not None:
        doc["spec"]["gcsFaultToleranceOptions"] = ft
    return doc


def _errors(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_cluster_spec(doc)
    return info.value.errors


def test_both_forms_are_accepted_alone() -> None:
    options = parse_cluster_spec(_doc({"redisAddress": "redis:6379",
                                       "redisPassword": {"valueFrom": SECRET_REF}}))
    assert gcs_ft.enabled(options.spec, options.metadata.annotations)
    legacy = parse_cluster_spec(_doc(
        annotations={"ray.io/ft-enabled": "True"}, params={"redis-password": "$REDIS_PASSWORD"},
        env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"},
             {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}]))
    assert gcs_ft.enabled(legacy.spec, legacy.metadata.annotations)  # any case, as KubeRay
    off = parse_cluster_spec(_doc(annotations={"ray.io/ft-enabled": "false"}))
    assert not gcs_ft.enabled(off.spec, off.metadata.annotations)


@pytest.mark.parametrize("value", ["true", "false"])
def test_the_annotation_and_the_options_together_are_refused(value: str) -> None:
    # KubeRay refuses any non-empty value of the annotation next to the options
    errors = _errors(_doc({"redisAddress": "redis:6379"},
                          annotations={"ray.io/ft-enabled": value}))
    assert errors == [
        "metadata.annotations[ray.io/ft-enabled]: cannot be set together with "
        "gcsFaultToleranceOptions: use only gcsFaultToleranceOptions to configure GCS "
        "fault tolerance"]


def test_a_redis_address_env_without_fault_tolerance_is_refused() -> None:
    errors = _errors(_doc(env=[{"name": "X", "value": "1"},
                               {"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}]))
    assert len(errors) == 1
    assert errors[0].startswith("headGroupSpec.template.spec.containers[0].env[1].name: "
                                "RAY_REDIS_ADDRESS implicitly enables GCS fault tolerance")


def test_with_the_options_the_old_places_for_password_address_namespace_are_refused() -> None:
    errors = _errors(_doc(
        {"redisAddress": "redis:6379"},
        annotations={"ray.io/external-storage-namespace": "ns1"},
        params={"redis-password": "hunter2"},
        env=[{"name": "REDIS_PASSWORD", "value": "hunter2"},
             {"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}]))
    assert errors == [
        "headGroupSpec.rayStartParams.redis-password: cannot be set with "
        "gcsFaultToleranceOptions: use gcsFaultToleranceOptions.redisPassword instead",
        "headGroupSpec.template.spec.containers[0].env[0].name: cannot set the REDIS_PASSWORD "
        "env var in the head pod with gcsFaultToleranceOptions: use "
        "gcsFaultToleranceOptions.redisPassword instead",
        "headGroupSpec.template.spec.containers[0].env[1].name: cannot set the "
        "RAY_REDIS_ADDRESS env var in the head pod with gcsFaultToleranceOptions: use "
        "gcsFaultToleranceOptions.redisAddress instead",
        "metadata.annotations[ray.io/external-storage-namespace]: cannot be set with "
        "gcsFaultToleranceOptions: use gcsFaultToleranceOptions.externalStorageNamespace "
        "instead",
    ]
    assert not any("hunter2" in e for e in errors)  # a password is never echoed


def test_the_legacy_form_keeps_its_storage_namespace_annotation() -> None:
    parse_cluster_spec(_doc(annotations={"ray.io/ft-enabled": "true",
                                         "ray.io/external-storage-namespace": "ns1"},
                            env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}]))


@pytest.mark.parametrize("legacy", [True, False])
def test_a_redis_user_name_only_in_the_options(legacy: bool) -> None:
    annotations = {"ray.io/ft-enabled": "true"} if legacy else {}
    ft = None if legacy else {"redisAddress": "redis:6379"}
    env = [{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}] if legacy else []
    errors = _errors(_doc(ft, annotations=annotations, params={"redis-username": "u"},
                          env=[*env, {"name": "REDIS_USERNAME", "value": "u"}]))
    at = len(env)
    assert errors == [
        "headGroupSpec.rayStartParams.redis-username: cannot set the redis user name in "
        "rayStartParams: use gcsFaultToleranceOptions.redisUsername instead",
        f"headGroupSpec.template.spec.containers[0].env[{at}].name: cannot set the redis user "
        "name in the REDIS_USERNAME env var: use gcsFaultToleranceOptions.redisUsername instead",
    ]


@pytest.mark.parametrize("field", ["redisPassword", "redisUsername"])
def test_a_credential_is_a_value_or_a_reference_not_both(field: str) -> None:
    errors = _errors(_doc({"redisAddress": "redis:6379",
                           field: {"value": "hunter2", "valueFrom": SECRET_REF}}))
    assert errors == [f"gcsFaultToleranceOptions.{field}: set either value or valueFrom, not "
                      "both (they become one env var of the head pod)"]
    parse_cluster_spec(_doc({"redisAddress": "redis:6379", field: {"value": "hunter2"}}))
    parse_cluster_spec(_doc({"redisAddress": "redis:6379", field: {"valueFrom": SECRET_REF}}))


def test_rocksdb_takes_no_redis_field_and_leaves_its_volume_to_the_operator() -> None:
    errors = _errors(_doc(
        {"backend": "rocksdb", "redisAddress": "redis:6379", "redisUsername": {"value": "u"},
         "redisPassword": {"valueFrom": SECRET_REF}, "externalStorageNamespace": "ns",
         "storage": {"claimName": "mine", "size": "2Gi"}},
        env=[{"name": "RAY_gcs_storage", "value": "rocksdb"},
             {"name": "RAY_gcs_storage_path", "value": "/x"}],
        container={"volumeMounts": [{"name": "logs", "mountPath": "/tmp/ray"},
                                    {"name": "other", "mountPath": "/data/gcs"}]},
        volumes=[{"name": "gcs-storage", "emptyDir": {}}]))
    assert errors == [
        "gcsFaultToleranceOptions.redisAddress: cannot be set when backend is 'rocksdb'",
        "gcsFaultToleranceOptions.redisUsername: cannot be set when backend is 'rocksdb'",
        "gcsFaultToleranceOptions.redisPassword: cannot be set when backend is 'rocksdb'",
        "gcsFaultToleranceOptions.externalStorageNamespace: cannot be set when backend is "
        "'rocksdb'",
        "gcsFaultToleranceOptions.storage.claimName: is mutually exclusive with size, "
        "storageClassName and accessModes",
        "headGroupSpec.template.spec.containers[0].env[0].name: cannot set RAY_gcs_storage in "
        "the head pod with the embedded (rocksdb) backend: KubeRay manages it",
        "headGroupSpec.template.spec.containers[0].env[1].name: cannot set "
        "RAY_gcs_storage_path in the head pod with the embedded (rocksdb) backend: KubeRay "
        "manages it",
        "headGroupSpec.template.spec.containers[0].volumeMounts[1]: no volume mount named "
        "'gcs-storage' or mounted at /data/gcs with the embedded (rocksdb) backend: KubeRay "
        "manages it",
        "headGroupSpec.template.spec.volumes[0].name: no volume named 'gcs-storage' with the "
        "embedded (rocksdb) backend: KubeRay manages it",
    ]
    parse_cluster_spec(_doc({"backend": "rocksdb", "storage": {"claimName": "mine"}}))
    parse_cluster_spec(_doc({"backend": "rocksdb", "storage": {"size": "2Gi"}}))


@pytest.mark.parametrize("ft", [{"redisAddress": "redis:6379", "storage": {"size": "1Gi"}},
                                {"backend": "redis", "storage": {}}])
def test_storage_is_for_rocksdb_only(ft: dict[str, Any]) -> None:
    assert _errors(_doc(ft)) == [
        "gcsFaultToleranceOptions.storage: cannot be set when backend is 'redis': it only "
        "applies to the 'rocksdb' backend"]


def test_the_rules_run_alongside_nothing_else_when_the_spec_is_fine() -> None:
    # no fault tolerance, nothing about it in the spec: no problem
    parse_cluster_spec(_doc(params={"num-cpus": "0"}))


def _job(annotations: dict[str, str], ft: dict[str, Any] | None) -> dict[str, Any]:
    cluster = _doc(ft)
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": "j", "annotations": annotations},
            "spec": {"entrypoint": "python -c 'print(1)'", "rayClusterSpec": cluster["spec"]}}


def test_a_rayjob_is_checked_with_its_own_annotations_as_kuberay_does() -> None:
    # KubeRay's ValidateRayJobSpec: ValidateRayClusterSpec(rayClusterSpec, rayJob.Annotations)
    with pytest.raises(SpecError) as info:
        parse_job_spec(_job({"ray.io/ft-enabled": "true"}, {"redisAddress": "redis:6379"}))
    assert info.value.errors == [
        "metadata.annotations[ray.io/ft-enabled]: cannot be set together with "
        "gcsFaultToleranceOptions: use only gcsFaultToleranceOptions to configure GCS "
        "fault tolerance"]
    with pytest.raises(SpecError) as info:
        parse_job_spec(_job({}, {"redisAddress": "redis:6379", "storage": {}}))
    assert info.value.errors == [
        "rayClusterSpec.gcsFaultToleranceOptions.storage: cannot be set when backend is "
        "'redis': it only applies to the 'rocksdb' backend"]
    parse_job_spec(_job({}, {"redisAddress": "redis:6379"}))


def test_a_rayservice_is_checked_with_its_own_annotations() -> None:
    cluster = _doc(env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}])["spec"]
    doc = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "s"},
           "spec": {"rayClusterConfig": cluster}}
    with pytest.raises(ValidationError) as info:
        RayService.model_validate(doc)
    assert messages(info.value) == [
        "rayClusterConfig.headGroupSpec.template.spec.containers[0].env[0].name: "
        "RAY_REDIS_ADDRESS implicitly enables GCS fault tolerance, but it is off: set "
        "gcsFaultToleranceOptions (redisAddress) to enable it"]
    RayService.model_validate({**doc, "metadata": {
        "name": "s", "annotations": {"ray.io/ft-enabled": "true"}}})
