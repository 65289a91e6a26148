"""The operator's look at a RayCluster's Redis (GCS fault tolerance): where it is, the
verdict of a real redis-server, the conditions it gives, and the head it withholds
(a fake API client, no cluster)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from rayscale.api import RayCluster
from rayscale.operator import redis_probe
from rayscale.operator.gcs_ft_wiring import redis_conditions
from rayscale.operator.handlers import Controller
from rayscale.operator.redis_probe import Target, Verdict
from rayscale.ports import free_port
from rayscale.spec import parse_cluster_spec
from tests.redisfix import REDIS_HOST, redis_server
from tests.test_operator_watch import FakeClient, fake_controller
from tests.test_operator_watch import cluster as cluster_doc

SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}


def spec(ft: dict[str, Any] | None = None, env: list[dict[str, Any]] | None = None,
         annotations: dict[str, str] | None = None,
         params: dict[str, str] | None = None) -> RayCluster:
    doc = cluster_doc(replicas=0)
    doc["metadata"]["annotations"] = annotations or {}
    head = doc["spec"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["env"] = env or []
    head["rayStartParams"] = {**head["rayStartParams"], **(params or {})}
    if ft is not None:
        doc["spec"]["gcsFaultToleranceOptions"] = ft
    return parse_cluster_spec(doc)


def secrets(values: dict[str, str]) -> redis_probe.SecretReader:
    data = {"redis-password-secret": {k: base64.b64encode(v.encode()).decode()
                                      for k, v in values.items()}} if values else {}
    return redis_probe.secret_reader(lambda name: data.get(name))


def test_the_target_from_gcs_fault_tolerance_options() -> None:
    found = redis_probe.target(spec({"redisAddress": "rediss://r.ns.svc:6390,other:1",
                                     "redisPassword": {"valueFrom": SECRET_REF},
                                     "redisUsername": {"value": "ray"}}),
                               secrets({"password": "s3cret"}))
    assert found is not None
    assert (found.host, found.port, found.ssl, found.username, found.password) == (
        "r.ns.svc", 6390, True, "ray", "s3cret")
    assert found.field == "gcsFaultToleranceOptions.redisAddress"
    assert found.password_from == ("gcsFaultToleranceOptions.redisPassword "
                                   "(Secret redis-password-secret key password)")
    assert "s3cret" not in repr(found)
    plain = redis_probe.target(spec({"redisAddress": "redis:6379"}), secrets({}))
    assert plain is not None and (plain.host, plain.port, plain.password) == (
        "redis", 6379, None)


def test_the_target_of_the_older_annotation_form() -> None:
    legacy = {"ray.io/ft-enabled": "true"}
    found = redis_probe.target(spec(env=[
        {"name": "RAY_REDIS_ADDRESS", "value": "127.0.0.9:7000"},
        {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}], annotations=legacy),
        secrets({"password": "pw"}))
    assert found is not None and (found.host, found.port, found.password) == (
        "127.0.0.9", 7000, "pw")
    assert found.field == "the head's RAY_REDIS_ADDRESS env"
    literal = redis_probe.target(spec(env=[
        {"name": "RAY_REDIS_ADDRESS", "value": "127.0.0.9:7000"}], annotations=legacy,
        params={"redis-password": "lit"}), secrets({}))
    assert literal is not None and literal.password == "lit"


def test_no_target_when_it_cannot_be_told() -> None:
    missing = {"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}}
    assert redis_probe.target(spec(missing), secrets({})) is None  # Secret not readable
    config_map = {"redisAddress": "redis:6379", "redisPassword": {
        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}}
    assert redis_probe.target(spec(config_map), secrets({})) is None
    assert redis_probe.target(spec(), secrets({})) is None  # fault tolerance off
    assert redis_probe.target(spec({"backend": "rocksdb"}), secrets({})) is None
    legacy_ref = spec(env=[{"name": "RAY_REDIS_ADDRESS", "value": "127.0.0.9:7000"}],
                      annotations={"ray.io/ft-enabled": "true"},
                      params={"redis-password": "$REDIS_PASSWORD"})
    assert redis_probe.target(legacy_ref, secrets({})) is None


def test_verdicts_of_a_real_redis(tmp_path: Path) -> None:
    with redis_server(tmp_path, password="right-pw-1") as redis:
        def at(password: str | None) -> Verdict | None:
            return redis_probe.probe(Target(redis.address, "redisAddress", redis.host,
                                            redis.port, False, None, password, "the Secret"))

        assert at("right-pw-1") is None
        wrong = at("wrong-pw-2")
        assert wrong is not None and wrong.reason == "RedisAuthenticationFailed"
        assert redis.address in wrong.message and "the Secret" in wrong.message
        assert "wrong-pw-2" not in wrong.message and "right-pw-1" not in wrong.message
        none = at(None)
        assert none is not None and none.reason == "RedisAuthenticationFailed"
    gone = redis_probe.probe(Target("x", "redisAddress", REDIS_HOST, free_port(), False, None,
                                    "pw", "the Secret"))
    assert gone is not None and gone.reason == "RedisUnreachable"
    unresolvable = Target("x", "redisAddress", "no-such-redis.invalid", 6379, False, None,
                          "pw", "the Secret")
    assert redis_probe.probe(unresolvable) is None  # only the pods may resolve it


BASE = [{"type": "HeadPodReady", "status": "True", "reason": "HeadPodRunningAndReady",
         "message": "", "lastTransitionTime": "t0"},
        {"type": "RayClusterProvisioned", "status": "False", "reason": "x", "message": "",
         "lastTransitionTime": "t0"}]


def test_the_verdict_in_kuberays_conditions() -> None:
    assert redis_conditions(BASE, None, False, [], "t1") == BASE
    verdict = Verdict("RedisUnreachable", "Redis at a:1 does not answer")
    reported = redis_conditions(BASE, verdict, False, BASE, "t1")
    assert reported[0] == {"type": "HeadPodReady", "status": "False",
                           "reason": "RedisUnreachable", "message": "Redis at a:1 does not answer",
                           "lastTransitionTime": "t1"}
    assert [c["type"] for c in reported] == ["HeadPodReady", "RayClusterProvisioned"]
    auth = Verdict("RedisAuthenticationFailed", "refused")
    withheld = redis_conditions(BASE, auth, True, reported, "t2")
    assert withheld[0]["lastTransitionTime"] == "t1"  # still False since t1
    assert withheld[-1] == {"type": "ReplicaFailure", "status": "True",
                            "reason": "RedisAuthenticationFailed",
                            "message": "the head pod is not created: refused",
                            "lastTransitionTime": "t2"}


@pytest.fixture
def controller() -> Controller:
    return fake_controller()


def _created_pods(fake: FakeClient) -> int:
    return sum(1 for call in fake.calls if call == ("create", "Pod"))


def test_a_refused_password_withholds_the_head_until_redis_accepts(
        controller: Controller) -> None:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    verdicts: list[Verdict | None] = [Verdict("RedisAuthenticationFailed", "refused")]
    controller.gcs_ft.verdict_of = lambda spec: verdicts[0]
    fake.cluster = cluster_doc(replicas=0)
    fake.cluster["spec"]["gcsFaultToleranceOptions"] = {
        "redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}}
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert fake.cluster["metadata"]["finalizers"] == ["ray.io/gcs-ft-redis-cleanup-finalizer"]
    assert _created_pods(fake) == 0
    assert _events(fake) == 1
    kinds = {c["type"]: c for c in fake.cluster["status"]["conditions"]}
    assert kinds["ReplicaFailure"]["reason"] == "RedisAuthenticationFailed"
    assert kinds["HeadPodReady"]["reason"] == "RedisAuthenticationFailed"

    _look_again(controller, fake)  # the same answer: said once
    assert _created_pods(fake) == 0 and _events(fake) == 1

    verdicts[0] = None  # the Secret fixed: the next look after the backoff
    _look_again(controller, fake)
    assert _created_pods(fake) == 1
    kinds = {c["type"]: c for c in fake.cluster["status"]["conditions"]}
    assert "ReplicaFailure" not in kinds
    assert kinds["HeadPodReady"]["reason"] == "HeadPodNotFound"

    # the head pod (not ready) is still looked after: Redis down again is said again
    verdicts[0] = Verdict("RedisUnreachable", "gone")
    _look_again(controller, fake)
    verdicts[0] = Verdict("RedisAuthenticationFailed", "refused")
    _look_again(controller, fake)
    assert _events(fake) == 3
    assert _created_pods(fake) == 1  # a created head is not taken back


def _events(fake: FakeClient) -> int:
    return sum(1 for call in fake.calls if call == ("create", "Event"))


def _look_again(controller: Controller, fake: FakeClient) -> None:
    controller.gcs_ft.probes["ns/c"].next_at = 0.0
    controller.clusters.apply("MODIFIED", fake.cluster)
    controller.process("ns/c")
