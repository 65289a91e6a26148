"""A lost head with GCS fault tolerance (the pure reconcile decision): a new head is
created, the running workers are kept, and an event says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rayscale.api import RayCluster
from rayscale.operator.desired import PodSettings
from rayscale.operator.handlers import Controller, OperatorContext, warm_up_decoders
from rayscale.operator.metrics import OperatorMetrics
from rayscale.operator.reconcile import ObservedPod, reconcile
from rayscale.spec import parse_cluster_spec
from tests.test_operator_watch import FakeClient, cluster

EXAMPLE = Path(__file__).parent.parent / "examples" / "seeds-autoscaler.yaml"
SETTINGS = PodSettings(shared_network=True)


def _spec(ft: bool) -> RayCluster:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = 1
    if ft:
        doc["spec"]["gcsFaultToleranceOptions"] = {"redisAddress": "redis:6379"}
    return parse_cluster_spec(doc)


WORKER = ObservedPod("c-small-group-worker-a", "small-group", "Running", ready=True)
OLD_HEAD = ObservedPod("c-head-old", "headgroup", "Running", deleting=True)


def test_a_deleted_head_is_replaced_and_the_workers_kept_with_an_event() -> None:
    actions = reconcile(_spec(ft=True), [OLD_HEAD, WORKER], SETTINGS)
    assert [p["metadata"]["labels"]["ray.io/node-type"] for p in actions.create] == ["head"]
    assert actions.delete == []
    [event] = [e for e in actions.events if e.reason == "CreatedHeadPod"]
    assert event.type == "Normal" and "1 worker pod(s) kept" in event.message


def test_no_event_without_fault_tolerance_or_at_the_first_head() -> None:
    assert not [e for e in reconcile(_spec(ft=False), [OLD_HEAD, WORKER], SETTINGS).events
                if e.reason == "CreatedHeadPod"]
    first = reconcile(_spec(ft=True), [], SETTINGS)
    assert len(first.create) == 2  # head and worker
    assert not [e for e in first.events if e.reason == "CreatedHeadPod"]


def test_the_operator_posts_the_event_when_it_replaces_the_head() -> None:
    """Through the controller (a fake API client): Normal events are only logged, but this
    one is posted, on the RayCluster."""
    posted: list[dict[str, Any]] = []

    class Recording(FakeClient):
        def create(self, obj: Any, namespace: str) -> Any:
            if obj.to_dict()["kind"] == "Event":
                posted.append(obj.to_dict())
            return super().create(obj, namespace)

    warm_up_decoders()
    fake = Recording()
    controller = Controller(OperatorContext(client=fake, settings=PodSettings(),  # type: ignore[arg-type]
                                            metrics=OperatorMetrics()))
    fake.cluster = cluster(replicas=1)
    fake.cluster["spec"]["gcsFaultToleranceOptions"] = {"redisAddress": "redis:6379"}
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert not [e for e in posted if e["reason"] == "CreatedHeadPod"]  # the first head
    (head,) = [p for p in controller.pods.indexed("ns/c")
               if p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    controller.pods.mark_deleting("ns", head["metadata"]["name"])  # kubectl delete pod
    controller.process("ns/c")
    heads = [p for p in controller.pods.indexed("ns/c")
             if p["metadata"]["labels"]["ray.io/node-type"] == "head"
             and not p["metadata"].get("deletionTimestamp")]
    assert len(heads) == 1 and heads[0]["metadata"]["name"] != head["metadata"]["name"]
    [event] = [e for e in posted if e["reason"] == "CreatedHeadPod"]
    assert event["type"] == "Normal" and event["involvedObject"]["kind"] == "RayCluster"
    assert "worker pod(s) kept" in event["message"]
