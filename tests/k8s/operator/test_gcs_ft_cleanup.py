"""GCS fault tolerance with a real Redis on the dev cluster: the cleanup on deletion
(KubeRay v1.7's finalizer and Job), its timeout, and a wrong password or an unreachable
Redis reported in the status and an Event.

Each test starts its own ``redis-server`` on 127.0.0.9 (tests/redisfix.py), which the
pods reach (the vnode's pods share this network namespace). The clusters are head only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Event, Secret
from lightkube.types import PatchType

from rayscale.ports import free_port
from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, manifest, pods, running
from tests.redisfix import REDIS_HOST, redis_server

FINALIZER = "ray.io/gcs-ft-redis-cleanup-finalizer"
SECRET = "redis-password-secret"


def ft_manifest(name: str, address: str, annotations: dict[str, str] | None = None
                ) -> dict[str, Any]:
    """The seeds example, head only, with KubeRay's external-redis options."""
    doc = manifest(name, replicas=0)
    doc["metadata"]["annotations"] = dict(annotations or {})
    doc["spec"]["gcsFaultToleranceOptions"] = {
        "redisAddress": address,
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": SECRET, "key": "password"}}},
    }
    return doc


def legacy_manifest(name: str, address: str) -> dict[str, Any]:
    """The same in the older form (KubeRay's ray-cluster.deprecate-gcs-ft.yaml)."""
    doc = manifest(name, replicas=0)
    doc["metadata"]["annotations"] = {"ray.io/ft-enabled": "true"}
    head = doc["spec"]["headGroupSpec"]
    head["rayStartParams"]["redis-password"] = "$REDIS_PASSWORD"
    container = head["template"]["spec"]["containers"][0]
    container["env"] = [*container.get("env", []),
                        {"name": "RAY_REDIS_ADDRESS", "value": address},
                        {"name": "REDIS_PASSWORD", "valueFrom": {
                            "secretKeyRef": {"name": SECRET, "key": "password"}}}]
    return doc


def make_secret(kube: Client, ns: str, password: str) -> None:
    kube.create(Secret.from_dict({  # type: ignore[arg-type]
        "metadata": {"name": SECRET}, "stringData": {"password": password}}), namespace=ns)


def cluster(kube: Client, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(kube.get(RayCluster, name, namespace=ns).to_dict())
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def condition(kube: Client, ns: str, name: str, kind: str) -> dict[str, Any] | None:
    body = cluster(kube, ns, name) or {}
    found = [c for c in (body.get("status") or {}).get("conditions") or []
             if c.get("type") == kind]
    return found[0] if found else None


def events(kube: Client, ns: str, name: str, reason: str) -> list[Event]:
    return [e for e in kube.list(Event, namespace=ns)
            if e.involvedObject.name == name and e.reason == reason]


@contextlib.contextmanager
def deleted_at_end(kube: Client, ns: str, name: str) -> Iterator[None]:
    """Delete the RayCluster while the test's Redis still runs, also on failure."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            kube.delete(RayCluster, name, namespace=ns)
            wait_for(lambda: cluster(kube, ns, name) is None, 120, f"{name} gone")


@pytest.mark.parametrize("form", ["options", "annotation"])
def test_deleting_a_cluster_deletes_its_keys_in_redis(
        kube: Client, ns: str, operator: Any, tmp_path: Path, form: str) -> None:
    name = "ft-cleanup"
    make = ft_manifest if form == "options" else legacy_manifest
    with redis_server(tmp_path / "redis") as redis, deleted_at_end(kube, ns, name):
        make_secret(kube, ns, redis.password)
        redis.cli("SET", "not-rays", "kept")  # a key of nobody's cluster: must survive
        created = kube.create(RayCluster.from_dict(  # type: ignore[arg-type]
            make(name, redis.address)), namespace=ns)
        uid = created["metadata"]["uid"]
        wait_for(lambda: FINALIZER in ((cluster(kube, ns, name) or {}).get("metadata") or {})
                 .get("finalizers", []), 30, "the Redis cleanup finalizer")
        # the head's GCS writes its tables under RAY<storage namespace>@ (the uid)
        wait_for(lambda: running(kube, ns, name, "head") == 1, 180, "the head pod running")
        keys = wait_for(lambda: redis.keys(f"RAY{uid}@*"), 180, "the GCS's keys in Redis")
        assert keys

        kube.delete(RayCluster, name, namespace=ns)
        wait_for(lambda: cluster(kube, ns, name) is None, 240,
                 "the RayCluster gone after the cleanup Job")
        assert redis.keys(f"RAY{uid}@*") == []
        left = redis.keys("*")
        assert left == ["not-rays"] and redis.dbsize() == 1, left
        (made,) = events(kube, ns, name, "CreatedRedisCleanupJob")
        assert made.type == "Normal"
        assert made.message == f"Created Redis cleanup Job {ns}/{name}-redis-cleanup"
        assert not events(kube, ns, name, "ForceDeletedStuckCluster")
        assert not events(kube, ns, name, "RedisCleanupJobFailed")


def _no_text(kube: Client, ns: str, name: str, operator: Any, *secrets: str) -> None:
    texts = [json.dumps(cluster(kube, ns, name), default=str),
             operator.log.read_text(errors="replace")]
    texts += [json.dumps(e.to_dict(), default=str) for e in kube.list(Event, namespace=ns)]
    texts += [json.dumps(p.to_dict(), default=str) for p in pods(kube, ns, name, "head")]
    for secret in secrets:
        assert not [t for t in texts if secret in t]


def test_a_wrong_password_is_reported_and_the_head_waits_until_it_is_right(
        kube: Client, ns: str, operator: Any, tmp_path: Path) -> None:
    name = "ft-wrongpw"
    wrong = "wrong-pw-7f3a9c1e55"
    with redis_server(tmp_path / "redis", password="right-pw-0c8d2b6a41") as redis, \
            deleted_at_end(kube, ns, name):
        make_secret(kube, ns, wrong)
        created = kube.create(RayCluster.from_dict(  # type: ignore[arg-type]
            ft_manifest(name, redis.address)), namespace=ns)
        (event,) = wait_for(lambda: events(kube, ns, name, "RedisAuthenticationFailed"), 60,
                            "a RedisAuthenticationFailed event")
        assert event.type == "Warning"
        assert redis.address in event.message and f"Secret {SECRET} key password" in event.message
        failure = wait_for(lambda: condition(kube, ns, name, "ReplicaFailure"), 30,
                           "the ReplicaFailure condition")
        assert failure["status"] == "True" and failure["reason"] == "RedisAuthenticationFailed"
        assert "head pod is not created" in failure["message"]
        assert redis.address in failure["message"]
        head = condition(kube, ns, name, "HeadPodReady")
        assert head is not None and head["status"] == "False"
        assert head["reason"] == "RedisAuthenticationFailed"
        assert pods(kube, ns, name, "head") == []  # no head to crash and restart
        _no_text(kube, ns, name, operator, wrong, redis.password)

        # the Secret fixed: the operator's next look (its backoff) lets the head start
        kube.patch(Secret, SECRET, {"stringData": {"password": redis.password}}, namespace=ns,
                   patch_type=PatchType.MERGE)
        wait_for(lambda: (condition(kube, ns, name, "HeadPodReady") or {}).get("status")
                 == "True", 180, "the head pod ready once the password is right")
        assert condition(kube, ns, name, "ReplicaFailure") is None
        assert running(kube, ns, name, "head") == 1
        # and its GCS got in: its tables are in Redis
        wait_for(lambda: redis.keys(f"RAY{created['metadata']['uid']}@*"), 180,
                 "the GCS's keys in Redis with the right password")
        _no_text(kube, ns, name, operator, wrong, redis.password)


def test_an_unreachable_redis_is_reported_and_deletion_times_out(
        kube: Client, ns: str, operator: Any) -> None:
    name = "ft-noredis"
    address = f"{REDIS_HOST}:{free_port()}"  # nothing listens there
    with deleted_at_end(kube, ns, name):
        make_secret(kube, ns, "whatever-pw-31d0")
        kube.create(RayCluster.from_dict(ft_manifest(  # type: ignore[arg-type]
            name, address, {"ray.io/gcs-ft-deletion-timeout": "5"})), namespace=ns)
        (event,) = wait_for(lambda: events(kube, ns, name, "RedisUnreachable"), 60,
                            "a RedisUnreachable event")
        assert event.type == "Warning" and address in event.message
        wait_for(lambda: (condition(kube, ns, name, "HeadPodReady") or {}).get("reason")
                 == "RedisUnreachable", 60, "HeadPodReady's reason RedisUnreachable")
        # reported, not withheld: the pods may reach what the operator does not
        wait_for(lambda: pods(kube, ns, name, "head"), 60, "the head pod created")
        assert condition(kube, ns, name, "ReplicaFailure") is None

        kube.delete(RayCluster, name, namespace=ns)
        wait_for(lambda: cluster(kube, ns, name) is None, 120,
                 "the RayCluster gone after the deletion timeout")
        (forced,) = events(kube, ns, name, "ForceDeletedStuckCluster")
        assert forced.type == "Warning"
        assert "may need manual cleanup" in forced.message

