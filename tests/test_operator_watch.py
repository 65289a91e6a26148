"""The watch-driven operator without an API server: caches, work queue, triggers, no duplicates."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError
from lightkube.models.meta_v1 import Status
from lightkube.resources.core_v1 import Event, Pod, Secret, Service

from rayscale.operator.desired import PodSettings
from rayscale.operator.handlers import (
    Controller,
    OperatorContext,
    classify_request,
    warm_up_decoders,
)
from rayscale.operator.metrics import OperatorMetrics
from rayscale.operator.watch import Informer, ObjectCache, WorkQueue
from rayscale.providers.kuberay import RayClusterResource

EXAMPLE = Path(__file__).parent.parent / "examples" / "seeds-autoscaler.yaml"


def pod(name: str, rv: int, cluster: str = "c", phase: str = "Running", uid: str | None = None,
        deleting: bool = False, ns: str = "ns") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}",
                            "resourceVersion": str(rv), "labels": {"ray.io/cluster": cluster}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def index(obj: dict[str, Any]) -> str | None:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['labels']['ray.io/cluster']}"


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str | None, str | None, str | None]] = []

    def __call__(self, key: str | None, old: dict[str, Any] | None,
                 new: dict[str, Any] | None) -> None:
        self.changes.append((key, old and old["metadata"]["resourceVersion"],
                             new and new["metadata"]["resourceVersion"]))


# ---------------------------------------------------------------- ObjectCache


def test_cache_follows_the_watch_and_indexes_by_cluster() -> None:
    seen = Recorder()
    cache = ObjectCache(index=index, on_change=seen)
    cache.apply("ADDED", pod("a", 10))
    cache.apply("ADDED", pod("b", 11, cluster="d"))
    cache.apply("MODIFIED", pod("a", 12, phase="Failed"))
    assert [p["metadata"]["name"] for p in cache.indexed("ns/c")] == ["a"]
    assert cache.indexed("ns/c")[0]["status"]["phase"] == "Failed"
    cache.apply("DELETED", pod("a", 13))
    assert cache.indexed("ns/c") == [] and len(cache) == 1
    assert seen.changes == [("ns/c", None, "10"), ("ns/d", None, "11"), ("ns/c", "10", "12"),
                            ("ns/c", "12", None)]


def test_own_writes_are_silent_and_an_older_event_does_not_undo_them() -> None:
    seen = Recorder()
    cache = ObjectCache(index=index, on_change=seen)
    cache.upsert(pod("new", 20, phase="Pending"))  # the create response
    assert [p["metadata"]["name"] for p in cache.indexed("ns/c")] == ["new"]
    cache.apply("ADDED", pod("new", 20, phase="Pending"))  # the watch catches up: nothing new
    cache.upsert(pod("new", 19, phase="Pending"))  # an older response: ignored
    assert seen.changes == []
    cache.apply("MODIFIED", pod("new", 21))
    assert seen.changes == [("ns/c", "20", "21")]
    assert cache.get("ns", "new")["status"]["phase"] == "Running"  # type: ignore[index]


def test_a_late_write_response_never_brings_a_deleted_object_back() -> None:
    cache = ObjectCache(index=index)
    cache.apply("ADDED", pod("x", 5))
    cache.apply("DELETED", pod("x", 7))
    cache.upsert(pod("x", 6))
    assert cache.get("ns", "x") is None


def test_relist_replaces_the_cache_but_keeps_what_is_newer_than_the_list() -> None:
    seen = Recorder()
    cache = ObjectCache(index=index, on_change=seen)
    cache.apply("ADDED", pod("gone", 5))  # deleted while the watch was down
    cache.apply("ADDED", pod("kept", 6))
    cache.upsert(pod("created-after-list", 30))  # written after the list was taken
    cache.apply("ADDED", pod("other-ns", 4, ns="elsewhere"))
    seen.changes.clear()
    cache.replace([pod("kept", 6), pod("fresh", 25)], 28, namespace="ns")
    names = sorted(k[1] for k in cache.all_keys())
    assert names == ["created-after-list", "fresh", "kept", "other-ns"]
    assert sorted(seen.changes, key=str) == sorted([("ns/c", "5", None), ("ns/c", None, "25")],
                                                   key=str)


def test_a_deletion_the_operator_asked_for_holds_until_the_watch_shows_it() -> None:
    cache = ObjectCache(index=index)
    cache.apply("ADDED", pod("w", 5))
    cache.mark_deleting("ns", "w")
    assert cache.get("ns", "w")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    cache.apply("MODIFIED", pod("w", 6))  # an update from before the delete
    assert cache.get("ns", "w")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    cache.apply("MODIFIED", pod("w", 7, deleting=True))
    cache.apply("DELETED", pod("w", 8, deleting=True))
    assert cache.get("ns", "w") is None


# ----------------------------------------------------------------- WorkQueue


def test_work_queue_deduplicates_and_never_hands_a_key_to_two_workers() -> None:
    queue = WorkQueue()
    try:
        queue.add("a")
        queue.add("a")
        queue.add("b")
        assert queue.get(0.1) == "a"
        queue.add("a")  # changed while being processed: again, but only after done()
        assert queue.get(0.1) == "b"
        assert queue.get(0.05) is None
        queue.done("a")
        assert queue.get(0.1) == "a"
        queue.done("a")
        queue.done("b")
        assert queue.pending() == 0
    finally:
        queue.shutdown()


def test_delayed_adds_fire_once_at_the_earliest_deadline() -> None:
    queue = WorkQueue()
    try:
        queue.add_after("a", 0.3)
        queue.add_after("a", 0.1)  # an earlier deadline wins
        queue.add_after("a", 5.0)  # a later one does not postpone it
        started = time.monotonic()
        assert queue.get(2.0) == "a"
        assert 0.05 < time.monotonic() - started < 1.0
        queue.done("a")
        assert queue.get(0.3) is None and queue.delayed() == 0
    finally:
        queue.shutdown()
    assert queue.get(0.1) is None


# -------------------------------------------------------------------- requests


@pytest.mark.parametrize(("method", "path", "params", "expected"), [
    ("GET", "/api/v1/namespaces/n/pods", {}, ("list", "pods")),
    ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "pods")),
    ("GET", "/api/v1/namespaces/n/services/s", {}, ("get", "services")),
    ("POST", "/api/v1/namespaces/n/pods", {}, ("create", "pods")),
    ("DELETE", "/api/v1/namespaces/n/pods/p", {}, ("delete", "pods")),
    ("PATCH", "/apis/ray.io/v1/namespaces/n/rayclusters/c/status", {},
     ("patch", "rayclusters/status")),
    ("GET", "/apis/ray.io/v1/rayclusters", {}, ("list", "rayclusters")),
])
def test_requests_are_classified_like_the_api_server_does(
    method: str, path: str, params: dict[str, str], expected: tuple[str, str]
) -> None:
    assert classify_request(method, path, params) == expected


# --------------------------------------------------------- the reconcile loop


class FakeClient:
    """Just enough of lightkube's Client: creates get a name, a uid and a version."""

    def __init__(self) -> None:
        self.cluster: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.rv = itertools.count(1000)
        self.names = itertools.count()

    def create(self, obj: Any, namespace: str) -> Any:
        doc = obj.to_dict()
        self.calls.append(("create", doc["kind"]))
        meta = doc["metadata"]
        meta.setdefault("name", f"{meta.get('generateName', 'x-')}{next(self.names)}")
        meta.update(uid=f"uid-{meta['name']}-{next(self.names)}",  # a new object, a new uid
                    resourceVersion=str(next(self.rv)), namespace=namespace)
        kinds = {"Pod": Pod, "Service": Service, "Event": Event, "Secret": Secret}
        return kinds[doc["kind"]].from_dict(doc)

    def delete(self, res: Any, name: str, namespace: str) -> None:
        self.calls.append(("delete", name))

    def patch(self, res: Any, name: str, obj: dict[str, Any], namespace: str,
              patch_type: Any) -> Any:
        self.calls.append(("patch", name))
        body = copy.deepcopy(self.cluster)
        if "status" in obj:
            body["status"] = {**(body.get("status") or {}), **obj["status"]}
        else:  # a metadata patch (GCS FT: the finalizer)
            body["metadata"].update({k: v for k, v in obj["metadata"].items()
                                     if k != "resourceVersion"})
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        self.cluster = body
        return RayClusterResource.Status.from_dict(body)


def cluster(replicas: int) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"].update(name="c", namespace="ns", uid="uid-c", resourceVersion="1",
                           generation=1)
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = replicas
    doc["spec"]["enableInTreeAutoscaling"] = False  # its RBAC objects: see test_helm_rbac
    return dict(doc)


def fake_controller() -> Controller:
    """The operator's controller on a :class:`FakeClient`, writing every status at once."""
    warm_up_decoders()  # creates run on several threads (see rayscale.kubedecode)
    fake = FakeClient()
    ctx = OperatorContext(client=fake, settings=PodSettings(), metrics=OperatorMetrics())  # type: ignore[arg-type]
    controller = Controller(ctx)
    controller.status_interval_s = 0.0  # every status write at once (see the coalescing test)
    return controller


@pytest.fixture
def controller() -> Controller:
    return fake_controller()


def test_pods_created_count_at_once_so_a_second_reconcile_creates_nothing(
    controller: Controller,
) -> None:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=2)
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert sorted(fake.calls) == [("create", "Pod")] * 3 + [
        ("create", "Secret"), ("create", "Service"), ("patch", "c")]
    (secret,) = [controller.secrets.get("ns", name) for _, name in controller.secrets.all_keys()]
    assert secret is not None and set(secret) == {"apiVersion", "kind", "metadata"}, \
        "the cache holds no token"
    fake.calls.clear()
    controller.process("ns/c")  # no watch event has arrived yet
    assert fake.calls == [], "nothing created twice, and the status just written not again"


def test_a_deleted_token_secret_is_made_again_and_a_foreign_one_is_left_alone(
    controller: Controller,
) -> None:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=0)
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert ("create", "Secret") in fake.calls
    while (key := controller.queue.get(0.01)) is not None:
        controller.queue.done(key)
    fake.calls.clear()
    secret = controller.secrets.get("ns", "c")
    assert secret is not None
    controller.secrets.apply("DELETED", secret)  # somebody deleted it
    assert controller.queue.get(0.1) == "ns/c"
    controller.queue.done("ns/c")
    controller.process("ns/c")
    assert fake.calls == [("create", "Secret")]  # a new one (a new token), as KubeRay does

    def conflict(obj: Any, namespace: str) -> Any:
        raise ApiError(status=Status(code=409, message="exists"))  # type: ignore[no-untyped-call]

    controller.secrets.apply("DELETED", controller.secrets.get("ns", "c"))  # type: ignore[arg-type]
    fake.create = conflict  # type: ignore[method-assign]
    controller.process("ns/c")  # exists, not labelled ours: the user's, used as it is
    assert ("ns", "c") in controller.foreign_secrets
    controller.process("ns/c")  # and not asked for again


def test_an_idle_cluster_costs_no_api_call_and_a_pod_change_queues_it(
    controller: Controller,
) -> None:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=1)
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    while (key := controller.queue.get(0.01)) is not None:  # the cluster's own ADDED
        controller.queue.done(key)
    created = controller.pods.indexed("ns/c")
    for n, obj in enumerate(created):  # the vnode reports them Running and Ready
        running = copy.deepcopy(obj)
        running["metadata"]["resourceVersion"] = str(2000 + n)
        running["status"] = {"phase": "Running", "podIP": f"127.0.0.{n + 2}",
                             "conditions": [{"type": "Ready", "status": "True"}]}
        controller.pods.apply("MODIFIED", running)
    assert controller.queue.get(0.1) == "ns/c"
    controller.process("ns/c")
    controller.queue.done("ns/c")
    assert fake.cluster["status"]["state"] == "ready"
    assert fake.cluster["status"]["availableWorkerReplicas"] == 1
    fake.calls.clear()
    controller.clusters.apply("MODIFIED", fake.cluster)  # the watch echoes our status patch
    worker = next(p for p in controller.pods.indexed("ns/c")
                  if p["metadata"]["labels"]["ray.io/node-type"] == "worker")
    annotated = copy.deepcopy(worker)
    annotated["metadata"]["resourceVersion"] = "3000"
    annotated["metadata"]["annotations"] = {"unrelated": "change"}
    controller.pods.apply("MODIFIED", annotated)
    assert controller.queue.get(0.05) is None, "neither event changes anything"
    controller.process("ns/c")
    assert fake.calls == [], "an idle reconcile makes no API call"
    gone = copy.deepcopy(annotated)
    gone["metadata"]["resourceVersion"] = "3001"
    gone["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    controller.pods.apply("MODIFIED", gone)
    assert controller.queue.get(0.1) == "ns/c"
    controller.process("ns/c")
    assert ("create", "Pod") in fake.calls, "the worker being deleted is replaced"
    assert fake.cluster["status"]["availableWorkerReplicas"] == 0


def test_a_deleted_cluster_is_forgotten(controller: Controller) -> None:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=0)
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert controller.ctx.states == {"ns/c": "provisioning"}
    controller.clusters.apply("DELETED", fake.cluster)
    fake.calls.clear()
    controller.process("ns/c")
    assert controller.ctx.states == {} and fake.calls == []


def test_informer_parses_a_watch_stream_split_anywhere() -> None:
    lines = b'{"type":"ADDED","object":{"a":1}}\n{"type":"BOOKMARK","object":{}}\n{"type":"D'
    rest = b'ELETED","object":{"b":2}}\n'
    events = list(Informer._events(iter([lines[:7], lines[7:], rest])))
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "DELETED"]


def test_workers_never_reconcile_one_cluster_twice_at_once() -> None:
    queue = WorkQueue()
    active: dict[str, int] = {}
    overlap: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while (key := queue.get(0.5)) is not None:
            with lock:
                active[key] = active.get(key, 0) + 1
                if active[key] > 1:
                    overlap.append(key)
            time.sleep(0.002)
            with lock:
                active[key] -= 1
            queue.done(key)

    workers = [threading.Thread(target=work) for _ in range(6)]
    for w in workers:
        w.start()
    for i in range(300):
        queue.add(f"k{i % 5}")
        time.sleep(0.0005)
    for w in workers:
        w.join()
    queue.shutdown()
    assert overlap == []


def test_a_status_written_by_an_older_operator_does_not_fail_the_cluster(
    controller: Controller,
) -> None:
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=0)
    fake.cluster["status"] = {"state": ""}  # not a state: the typed model rejects it
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert ("create", "Pod") in fake.calls, "reconciled: the status is output, not input"
    assert fake.cluster["status"]["state"] is None, "unset while provisioning, as KubeRay"


def test_status_writes_of_a_burst_of_pod_changes_are_coalesced(controller: Controller) -> None:
    controller.status_interval_s = 0.3
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=3)
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert fake.calls.count(("patch", "c")) == 1
    # turning Running one by one; not the last one (ready, a change of state, is written at once)
    for n, obj in enumerate(controller.pods.indexed("ns/c")[:-1]):
        running = copy.deepcopy(obj)
        running["metadata"]["resourceVersion"] = str(2000 + n)
        running["status"] = {"phase": "Running", "podIP": f"127.0.0.{n + 2}"}
        controller.pods.apply("MODIFIED", running)
        controller.process("ns/c")
    assert fake.calls.count(("patch", "c")) == 1, "written again only after the interval"
    assert controller.queue.delayed() == 1, "a reconcile is due when the interval ends"
    time.sleep(0.35)
    assert controller.queue.delayed() == 0
    controller.process("ns/c")
    assert fake.calls.count(("patch", "c")) == 2, "one write for the whole burst"
    assert fake.cluster["status"]["availableWorkerReplicas"] >= 2


def test_a_change_of_state_is_written_at_once(controller: Controller) -> None:
    controller.status_interval_s = 10.0
    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=1)
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    for n, obj in enumerate(controller.pods.indexed("ns/c")):
        running = copy.deepcopy(obj)
        running["metadata"]["resourceVersion"] = str(2000 + n)
        running["status"] = {"phase": "Running", "podIP": f"127.0.0.{n + 2}",
                             "conditions": [{"type": "Ready", "status": "True"}]}
        controller.pods.apply("MODIFIED", running)
    controller.process("ns/c")
    assert fake.cluster["status"]["state"] == "ready", "not held back by the interval"


def test_a_create_that_may_have_happened_holds_the_cluster_and_nothing_is_created_twice(
    controller: Controller,
) -> None:
    import httpx2

    fake: FakeClient = controller.ctx.client  # type: ignore[assignment]
    fake.cluster = cluster(replicas=4)
    create = fake.create
    calls = itertools.count()

    def flaky(obj: Any, namespace: str) -> Any:
        if obj.to_dict()["kind"] == "Pod" and next(calls) == 2:
            time.sleep(0.05)  # the others finish meanwhile
            raise httpx2.ReadTimeout("no answer: created or not?")
        return create(obj, namespace)

    fake.create = flaky  # type: ignore[method-assign]
    controller.clusters.apply("ADDED", fake.cluster)
    controller.process("ns/c")
    assert len(controller.pods.indexed("ns/c")) == 4, "every create but the failed one counted"
    assert "ns/c" in controller.holds, "held until the watch may have reported that pod"
    controller.process("ns/c")
    assert len(controller.pods.indexed("ns/c")) == 4, "nothing created while held"
    controller.holds["ns/c"] = 0.0  # the hold is over; the watch reported nothing
    controller.process("ns/c")
    assert len(controller.pods.indexed("ns/c")) == 5, "the one missing pod, once"


def test_informer_lists_watches_from_the_list_and_relists_after_410() -> None:
    import json

    import httpx2

    requests: list[dict[str, str]] = []

    def reply(request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        requests.append(params)
        assert params.get("labelSelector") == "ray.io/cluster"
        lists = sum(1 for p in requests if "watch" not in p)
        if "watch" not in params:  # the first list has a and b; the second (after 410) only b
            items = [pod("a", 5), pod("b", 6)] if lists == 1 else [pod("b", 25)]
            return httpx2.Response(200, json={"metadata": {"resourceVersion": str(10 * lists)},
                                              "items": items})
        watches = sum(1 for p in requests if "watch" in p)
        if watches == 1:
            assert params["resourceVersion"] == "10" and params["allowWatchBookmarks"] == "true"
            lines = [{"type": "ADDED", "object": pod("c", 11)},
                     {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}]
        elif watches == 2:
            assert params["resourceVersion"] == "12", "continues from the last version seen"
            lines = [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}]
        else:
            lines = []
        return httpx2.Response(200, content="".join(json.dumps(x) + "\n" for x in lines))

    seen = Recorder()
    cache = ObjectCache(index=index, on_change=seen)
    informer = Informer(name="pods", http=httpx2.Client(transport=httpx2.MockTransport(reply),
                                                         base_url="https://api"),
                        cache=cache, all_path="api/v1/pods", path="api/v1/namespaces/{ns}/pods",
                        label_selector="ray.io/cluster", api_version="v1", kind="Pod")
    informer.start()
    try:
        deadline = time.monotonic() + 10
        while sum(1 for p in requests if "watch" not in p) < 2 or len(requests) < 5:
            assert time.monotonic() < deadline, requests
            time.sleep(0.01)
        assert informer.synced.is_set() and informer.stats.relists == 1
        time.sleep(0.1)
        # a and c went while the watch was gone (410): the relist replaced the cache
        assert sorted(k[1] for k in cache.all_keys()) == ["b"]
        assert cache.get("ns", "b")["kind"] == "Pod"  # type: ignore[index]
        assert ("ns/c", "11", None) in seen.changes and ("ns/c", "5", None) in seen.changes
    finally:
        informer.stop()
