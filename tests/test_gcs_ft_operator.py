"""GCS fault tolerance through the operator's reconcile (a fake API client, no cluster):
the pods it creates carry the env, and the embedded backend is refused as KubeRay's
default feature gates refuse it."""

from __future__ import annotations

from typing import Any

import pytest

from rayscale.operator.handlers import Controller
from tests.test_operator_watch import FakeClient, cluster, fake_controller

SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}


@pytest.fixture
def controller() -> Controller:
    made = fake_controller()
    made.gcs_ft.verdict_of = lambda spec: None  # no Redis here: the dev cluster tests ask one
    return made


def _run(controller: Controller, ft: dict[str, Any]) -> FakeClient:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=1)
    fake.cluster["spec"]["gcsFaultToleranceOptions"] = ft
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    return fake


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom"))
            for e in pod["spec"]["containers"][0].get("env", [])}


def test_the_pods_the_operator_creates_carry_fault_tolerance(controller: Controller) -> None:
    _run(controller, {"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}})
    pods = controller.pods.indexed("ns/c")
    (head,) = [p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    (worker,) = [p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker"]
    env = _env(head)
    assert env["RAY_REDIS_ADDRESS"] == "redis:6379"
    assert env["REDIS_PASSWORD"] == SECRET_REF
    assert env["RAY_external_storage_namespace"] == "uid-c"  # the RayCluster's uid
    assert head["metadata"]["annotations"]["ray.io/ft-enabled"] == "true"
    assert "--redis-password=$(REDIS_PASSWORD)" in head["spec"]["containers"][0]["command"]
    assert _env(worker)["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600"


def test_the_embedded_backend_is_refused_with_kuberays_event(controller: Controller) -> None:
    fake = _run(controller, {"backend": "rocksdb"})
    assert ("create", "Pod") not in fake.calls  # nothing is created for a refused spec
    assert fake.cluster["status"]["state"] == "failed"
    assert "GCSFaultToleranceEmbeddedStorage" in fake.cluster["status"]["reason"]
    assert ("create", "Event") in fake.calls
