"""The Redis cleanup on RayCluster deletion, KubeRay v1.7's (raycluster_controller.go):
the finalizer, the timeout annotation, the cleanup Job; decisions only, no API."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rayscale.api import RayCluster
from rayscale.operator import gcs_ft
from rayscale.operator.desired import PodSettings, head_pod
from rayscale.spec import parse_cluster_spec

UID = "0b6a6d3c-5f1e-4e43-9a1c-3f0c2f9e1a11"
SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
FIN = ["ray.io/gcs-ft-redis-cleanup-finalizer"]


def cluster(ft: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
            name: str = "raycluster-external-redis") -> RayCluster:
    head: dict[str, Any] = {"name": "ray-head", "image": "rayproject/ray:2.52.0",
                            "livenessProbe": {"exec": {"command": ["true"]}},
                            "readinessProbe": {"exec": {"command": ["true"]}},
                            "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1"}}}
    annotations = dict(annotations or {})
    if ft is None and annotations.get("ray.io/ft-enabled") == "true":
        head["env"] = [{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}]
    doc: dict[str, Any] = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": name, "namespace": "ns1", "uid": UID, "annotations": annotations},
        "spec": {"headGroupSpec": {
            "rayStartParams": {},
            "template": {"spec": {"containers": [head, {"name": "sidecar", "image": "busybox"}],
                                  "initContainers": [{"name": "wait-for-tls-ip-san"},
                                                     {"name": "other"}]}}}},
    }
    if ft is not None:
        doc["spec"]["gcsFaultToleranceOptions"] = ft
    return parse_cluster_spec(doc)


REDIS = {"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}}
LEGACY = {"ray.io/ft-enabled": "true"}


def step(spec: RayCluster, finalizers: list[str], deleted_s_ago: float | None,
         head_pods: int = 0, job: dict[str, Any] | None = None,
         cleanup_on: bool = True) -> gcs_ft.DeletionStep:
    deleted = None if deleted_s_ago is None else T0 - timedelta(seconds=deleted_s_ago)
    return gcs_ft.deletion_step(spec, finalizers, deleted, T0, head_pods, job, cleanup_on)


def job(*conditions: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}


@pytest.mark.parametrize("form", ["options", "annotation"])
def test_a_redis_backed_cluster_gets_the_finalizer_first(form: str) -> None:
    spec = cluster(REDIS) if form == "options" else cluster(annotations=LEGACY)
    assert step(spec, [], None).action == "add-finalizer"
    assert step(spec, FIN, None).action == "none"
    assert step(spec, [], None, cleanup_on=False).action == "none"


def test_no_finalizer_without_redis_fault_tolerance() -> None:
    for spec in (cluster(), cluster(annotations={"ray.io/ft-enabled": "false"}),
                 cluster({"backend": "rocksdb"})):
        assert step(spec, [], None).action == "none"
        assert step(spec, [], 5).action == "ignore"


def test_an_embedded_cluster_loses_a_stale_finalizer_on_deletion() -> None:
    assert step(cluster({"backend": "rocksdb"}), FIN, 1).action == "remove-stale"
    assert step(cluster({"backend": "rocksdb"}), FIN, None).action == "none"


def test_deletion_waits_for_the_head_then_runs_the_job_then_removes_the_finalizer() -> None:
    spec = cluster(REDIS)
    assert step(spec, FIN, 1, head_pods=1).action == "delete-pods"
    created = step(spec, FIN, 20)
    assert created.action == "create-job"
    assert created.event == ("Normal", "CreatedRedisCleanupJob")
    assert created.message == (
        "Created Redis cleanup Job ns1/raycluster-external-redis-redis-cleanup")
    assert step(spec, FIN, 30, job=job()).action == "wait-job"
    assert step(spec, FIN, 30, job=job(("Complete", "False"))).action == "wait-job"
    done = step(spec, FIN, 40, job=job(("Complete", "True")))
    assert done.action == "remove-finalizer" and "completed" in done.message
    for failed in (job(("Failed", "True")), job(("FailureTarget", "True"))):
        step_ = step(spec, FIN, 40, job=failed)
        assert step_.action == "remove-finalizer" and "by hand" in step_.message
        assert step_.event == ("Warning", "RedisCleanupJobFailed")
    assert done.event is None


def test_the_timeout_counts_from_the_deletion_and_forces_the_finalizer_off() -> None:
    spec = cluster(REDIS)
    assert step(spec, FIN, 299, job=job()).action == "wait-job"
    forced = step(spec, FIN, 300, job=job())
    assert forced.action == "force-remove"
    assert forced.event == ("Warning", "ForceDeletedStuckCluster")
    assert forced.message == (
        "Force-removed GCS FT finalizer after 300s due to Redis cleanup timeout; Redis storage "
        f"namespace '{UID}' may need manual cleanup")
    # as KubeRay: only once the head pod is gone
    assert step(spec, FIN, 10_000, head_pods=1).action == "delete-pods"
    # without our finalizer there is nothing to force off
    assert step(spec, [], 10_000).action == "create-job"


@pytest.mark.parametrize(("text", "seconds"), [
    (None, 300), ("60", 60), ("+60", 60), ("0", 300), ("-5", 300), ("1.5", 300), ("5m", 300),
    (" 60", 300), ("6_0", 300), ("", 300),
])
def test_the_timeout_annotation_is_whole_positive_seconds(text: str | None, seconds: int) -> None:
    annotations = {} if text is None else {"ray.io/gcs-ft-deletion-timeout": text}
    assert gcs_ft.deletion_timeout_s(annotations) == seconds


def test_a_short_timeout_from_the_annotation() -> None:
    spec = cluster(REDIS, annotations={"ray.io/gcs-ft-deletion-timeout": "30"})
    assert step(spec, FIN, 29, job=job()).action == "wait-job"
    assert step(spec, FIN, 30, job=job()).action == "force-remove"


@pytest.mark.parametrize(("env", "on"), [({}, True), ({"ENABLE_GCS_FT_REDIS_CLEANUP": "False"},
                                                      False),
                                         ({"ENABLE_GCS_FT_REDIS_CLEANUP": "no"}, True)])
def test_the_operator_switch(env: dict[str, str], on: bool) -> None:
    assert gcs_ft.cleanup_enabled(env) is on


def test_the_cleanup_job_is_the_heads_ray_container_running_rays_cleanup() -> None:
    spec = cluster(REDIS)
    head = head_pod(spec, PodSettings())
    made = gcs_ft.cleanup_job(head, spec)
    assert made["metadata"]["name"] == "raycluster-external-redis-redis-cleanup"
    assert made["metadata"]["labels"]["ray.io/node-type"] == "redis-cleanup"
    assert made["metadata"]["annotations"]["ray.io/external-storage-namespace"] == UID
    assert made["spec"]["backoffLimit"] == 0
    assert made["spec"]["activeDeadlineSeconds"] == 300
    pod = made["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [c["name"] for c in pod["containers"]] == ["ray-head"]
    assert [c["name"] for c in pod["initContainers"]] == ["other"]
    ray = pod["containers"][0]
    assert ray["command"] == ["/bin/bash", "-c", "--"]
    assert "livenessProbe" not in ray and "readinessProbe" not in ray
    assert ray["resources"] == {"limits": {"cpu": "200m", "memory": "256Mi"},
                                "requests": {"cpu": "200m", "memory": "256Mi"}}
    env = {e["name"]: e for e in ray["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}
    assert env["RAY_external_storage_namespace"]["value"] == UID
    assert env["RAY_redis_db_connect_retries"]["value"] == "120"
    assert env["RAY_redis_db_connect_wait_milliseconds"]["value"] == "500"
    (script,) = ray["args"]
    assert "from ray._private.gcs_utils import cleanup_redis_storage" in script
    assert "storage_namespace=os.getenv('RAY_external_storage_namespace')" in script
    assert "password=os.getenv('REDIS_PASSWORD', parsed.password or '')" in script
    assert "username=" not in script
    assert head["spec"]["containers"][0]["command"][:2] == ["ray", "start"]  # not modified


def test_the_cleanup_script_passes_the_user_name_when_the_head_has_one() -> None:
    spec = cluster({**REDIS, "redisUsername": {"value": "ray"}})
    made = gcs_ft.cleanup_job(head_pod(spec, PodSettings()), spec)
    (script,) = made["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "username=os.getenv('REDIS_USERNAME', parsed.username), " in script


def test_a_long_name_is_trimmed_to_63_from_the_front() -> None:
    assert gcs_ft.cleanup_job_name("c") == "c-redis-cleanup"
    name = gcs_ft.cleanup_job_name("a" * 60)
    assert name == "a" * 49 + "-redis-cleanup"
    # a cut that starts at punctuation gets KubeRay's leading "r" (CheckLabel)
    assert gcs_ft.cleanup_job_name("b" * 10 + "-" + "c" * 48) == "r" + "c" * 48 + "-redis-cleanup"


def _python_of(script: str) -> str:
    """The program of the script's `python -c "..."` (bash double quotes, nothing to expand)."""
    start = script.index('python -c "') + len('python -c "')
    assert script.endswith('"')
    code = script[start:-1]
    assert not any(c in code for c in '"$`\\')  # bash passes it on unchanged
    return code


@pytest.mark.parametrize(("address", "host", "port", "ssl"), [
    ("redis:6379", "redis", 6379, False),
    ("redis://redis.ns.svc:6380,other:1", "redis.ns.svc", 6380, False),
    ("rediss://secure:6390", "secure", 6390, True),
])
@pytest.mark.parametrize("with_username", [False, True])
def test_the_cleanup_program_calls_rays_cleanup_with_the_heads_env(
        monkeypatch: pytest.MonkeyPatch, address: str, host: str, port: int, ssl: bool,
        with_username: bool) -> None:
    calls: list[dict[str, Any]] = []
    stub = types.ModuleType("ray._private.gcs_utils")
    stub.cleanup_redis_storage = lambda **kw: calls.append(kw) or True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray._private.gcs_utils", stub)
    monkeypatch.setenv("RAY_REDIS_ADDRESS", address)
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    monkeypatch.setenv("REDIS_USERNAME", "user")
    monkeypatch.setenv("RAY_external_storage_namespace", UID)
    exec(compile(_python_of(gcs_ft.cleanup_script(with_username)), "<cleanup>", "exec"), {})
    expected = {"host": host, "port": port, "password": "pw", "use_ssl": ssl,
                "storage_namespace": UID}
    if with_username:
        expected["username"] = "user"
    assert calls == [expected]


def test_a_failed_cleanup_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = types.ModuleType("ray._private.gcs_utils")
    stub.cleanup_redis_storage = lambda **kw: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray._private.gcs_utils", stub)
    monkeypatch.setenv("RAY_REDIS_ADDRESS", "redis:6379")
    with pytest.raises(SystemExit) as info:
        exec(compile(_python_of(gcs_ft.cleanup_script(False)), "<cleanup>", "exec"), {})
    assert info.value.code == 1
