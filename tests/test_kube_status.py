"""A RayCluster's status on Kubernetes: the sidecar's ConfigMap, the view `rayscale status -n`
builds from it, and the operator's history fed by it (a real SQLite history file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from rayscale.autoscaler import kube_status
from rayscale.autoscaler.kube_status import StatusConfigMap, encode, parse_document
from rayscale.autoscaler.kube_view import STALE_AFTER_S
from rayscale.autoscaler.kube_view import kube_status as view
from rayscale.history.store import HistoryStore
from rayscale.operator.history import OperatorHistory

NOW = 1_800_000_000.0
ours = ConfigMap(metadata=ObjectMeta(labels={"app.kubernetes.io/component": "autoscaler-status"}))


def doc(running: int = 1, pending_tasks: int = 0, events: list[dict[str, Any]] | None = None,
        updated_at: float = NOW) -> dict[str, Any]:
    return {
        "updated_at": updated_at,
        "groups": {"small": {"running": running, "pending": 0, "terminating": 0, "idle": 0,
                             "min": 0, "max": 4, "launchable": True}},
        "nodes": [{"id": f"w-{i}", "group": "small", "status": "running", "idle_s": 62.0}
                  for i in range(running)],
        "demand": {"tasks": [{"resources": {"CPU": 1}, "count": pending_tasks}]
                   if pending_tasks else [], "gangs": [], "floor": []},
        "plan": {"capped": {}, "infeasible": {}},
        "events": events or [],
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_sidecar_writes_when_something_changes_at_most_every_interval_and_on_heartbeat(
) -> None:
    clock = FakeClock()
    writes: list[Any] = []

    class Client:
        def get(self, res: Any, name: str, namespace: str) -> ConfigMap:
            return ours  # written by an earlier sidecar of this cluster

        def apply(self, obj: Any, field_manager: str, force: bool) -> None:
            writes.append((obj, field_manager, force))

    pub = StatusConfigMap(Client(), "c1", "team-a", "uid-1", clock=clock)  # type: ignore[arg-type]
    pub.publish(doc(1))
    assert len(writes) == 1
    obj, manager, force = writes[0]
    assert obj.metadata.name == "c1-autoscaler-status" and obj.metadata.namespace == "team-a"
    assert obj.metadata.labels["ray.io/cluster"] == "c1"
    assert obj.metadata.ownerReferences[0].uid == "uid-1"
    assert obj.metadata.ownerReferences[0].kind == "RayCluster"
    assert parse_document(obj.data)["groups"]["small"]["running"] == 1
    assert manager == "rayscale-autoscaler" and force
    clock.now += 1.0
    pub.publish(doc(2))  # a change, but within the interval
    assert len(writes) == 1
    clock.now += kube_status.MIN_INTERVAL_S
    pub.publish(doc(2))
    assert len(writes) == 2
    clock.now += kube_status.MIN_INTERVAL_S
    pub.publish(doc(2, updated_at=NOW + 5))  # only the time changed: not yet
    assert len(writes) == 2
    clock.now += kube_status.HEARTBEAT_S
    pub.publish(doc(2, updated_at=NOW + 20))  # the heartbeat
    assert len(writes) == 3


def test_a_failing_write_never_raises_and_is_tried_again_later() -> None:
    clock = FakeClock()
    calls = []

    class Client:
        def get(self, res: Any, name: str, namespace: str) -> ConfigMap:
            raise OSError("connection refused")

        def apply(self, obj: Any, field_manager: str, force: bool) -> None:
            calls.append(obj)
            raise OSError("connection refused")

    pub = StatusConfigMap(Client(), "c1", "ns", None, clock=clock)  # type: ignore[arg-type]
    pub.publish(doc(1))
    pub.publish(doc(2))
    assert not calls, "the read failed first; not tried again every round"
    clock.now += kube_status.MIN_INTERVAL_S
    pub.publish(doc(2))
    assert not calls


def test_a_configmap_of_that_name_that_is_not_ours_is_left_alone() -> None:
    writes: list[Any] = []

    class Client:
        def get(self, res: Any, name: str, namespace: str) -> ConfigMap:
            return ConfigMap(metadata=ObjectMeta(name=name, labels={"app": "mine"}))

        def apply(self, obj: Any, field_manager: str, force: bool) -> None:
            writes.append(obj)

    pub = StatusConfigMap(Client(), "c1", "ns", "uid", clock=FakeClock())  # type: ignore[arg-type]
    for _ in range(3):
        pub.publish(doc(1))
    assert not writes


def test_a_huge_document_leaves_out_its_node_list_to_fit_a_configmap() -> None:
    big = doc(1)
    big["nodes"] = [{"id": f"w-{i:05d}", "group": "small", "status": "running", "ip": "x" * 100}
                    for i in range(10_000)]
    text = encode(big)
    assert len(text) <= kube_status.MAX_BYTES
    back = json.loads(text)
    assert back["nodes"] == [] and back["nodes_omitted"] == 10_000
    assert back["groups"] == big["groups"]


def cluster(autoscaling: bool = True, suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "c1", "namespace": "team-a", "uid": "uid-1",
                     "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"enableInTreeAutoscaling": autoscaling, "suspend": suspend,
                 "workerGroupSpecs": [{"groupName": "small", "minReplicas": 0,
                                       "maxReplicas": 4, "replicas": 2}]},
        "status": {"state": "ready", "readyWorkerReplicas": 1, "desiredWorkerReplicas": 2,
                   "endpoints": {"gcs-server": "6379", "dashboard": "8265"},
                   "conditions": [{"type": "HeadPodReady", "status": "True"}]},
    }


def pod(name: str, node_type: str, phase: str = "Running", ready: bool = True,
        containers: tuple[str, ...] = ("ray-head", "autoscaler"),
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"ray.io/cluster": "c1",
                                                     "ray.io/node-type": node_type,
                                                     "ray.io/group": "small"}}
    if deleting:
        meta["deletionTimestamp"] = "2027-01-15T08:01:00Z"
    return {"metadata": meta, "status": {
        "phase": phase, "podIP": "10.0.0.5",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": c, "state": {"running": {}}} for c in containers]}}


def test_view_is_running_with_a_ready_head_and_a_fresh_report() -> None:
    out = view(cluster(), [pod("h", "head"), pod("w1", "worker")], doc(1, 3), now=NOW + 2)
    assert out["state"] == "running" and out["problems"] == []
    assert out["name"] == "team-a/c1" and out["address"] == "10.0.0.5:6379"
    assert out["dashboard"] == "http://10.0.0.5:8265"
    assert out["groups"]["small"]["running"] == 1
    assert out["demand"]["tasks"][0]["count"] == 3
    assert out["kubernetes"]["status"]["readyWorkerReplicas"] == 1
    assert out["head"]["pod"] == "h"


def test_view_names_what_is_wrong() -> None:
    stale = view(cluster(), [pod("h", "head")], doc(1), now=NOW + STALE_AFTER_S + 5)
    assert stale["state"] == "degraded"
    assert any("report is" in p for p in stale["problems"])
    not_ready = view(cluster(), [pod("h", "head", ready=False)], doc(1), now=NOW)
    assert not_ready["state"] == "degraded" and not not_ready["gcs_reachable"]
    # the report is the past: kept apart, the groups come from the pods
    assert not_ready["last_known"]["groups"]["small"]["running"] == 1
    assert not_ready["groups"]["small"]["running"] == 0
    no_sidecar = view(cluster(), [pod("h", "head", containers=("ray-head",))], doc(1), now=NOW)
    assert "the autoscaler sidecar is not running" in no_sidecar["problems"]
    down = view(cluster(), [], doc(1), now=NOW)
    assert down["state"] == "down" and down["problems"] == ["there is no head pod"]
    suspended = view(cluster(suspend=True), [], None, now=NOW)
    assert suspended["state"] == "suspended"
    queued = cluster(suspend=True)
    queued["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a"}
    waiting = view(queued, [], None, now=NOW)
    assert "waits in Kueue's queue team-a" in waiting["problems"][0]
    assert waiting["kubernetes"]["queue"] == "team-a"


def test_view_of_a_cluster_without_autoscaling_counts_pods() -> None:
    pods = [pod("h", "head", containers=("ray-head",)), pod("w1", "worker"),
            pod("w2", "worker", phase="Pending", ready=False), pod("w3", "worker", deleting=True),
            pod("w4", "worker", phase="Failed")]
    out = view(cluster(autoscaling=False), pods, None, now=NOW)
    assert out["state"] == "running", out["problems"]
    g = out["groups"]["small"]
    assert (g["running"], g["pending"], g["terminating"]) == (1, 1, 1)
    assert sorted(n["id"] for n in out["nodes"]) == ["w1", "w2", "w3"]


def status_map(d: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": "c1-autoscaler-status", "namespace": "team-a",
                         "labels": {"ray.io/cluster": "c1"},
                         "ownerReferences": [{"kind": "RayCluster", "uid": uid, "name": "c1"}]},
            "data": {"status.json": json.dumps(d)}}


def test_the_operator_history_keeps_rounds_and_each_event_once(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    keeper = OperatorHistory(HistoryStore(path))
    keeper.cluster_changed(None, cluster())
    launch = {"kind": "launch", "message": "launched 2 small", "group": "small", "ts": NOW + 1}
    stop = {"kind": "stop", "message": "stopped w-0", "group": "small", "node": "w-0",
            "ts": NOW + 90}
    keeper.status_changed(status_map(doc(0, 2, [launch], updated_at=NOW + 1)))
    keeper.status_changed(status_map(doc(2, 0, [launch], updated_at=NOW + 30)))  # seen
    keeper.status_changed(status_map(doc(1, 0, [launch, stop], updated_at=NOW + 90)))
    keeper.status_changed({"metadata": {"name": "x"}, "data": {"status.json": "{"}})  # ignored

    # a restarted operator records nothing twice
    again = OperatorHistory(HistoryStore(path))
    again.status_changed(status_map(doc(1, 0, [launch, stop], updated_at=NOW + 91)))
    again.cluster_changed(cluster(), None)  # deleted

    store = HistoryStore(path, readonly=True)
    (row,) = store.clusters()
    assert (row.name, row.mode, row.uid) == ("team-a/c1", "kubernetes", "uid-1")
    assert row.finished
    line = store.timeline(row.id)
    assert [(e.kind, e.message) for e in line.events] == [
        ("launch", "launched 2 small"), ("stop", "stopped w-0")]
    assert line.events[0].detail == "demand: 2 pending 1-CPU tasks"
    assert line.events[1].detail == "idle 62 s"
    assert [n for _, n in line.counts[("small", "running")]] == [0, 2, 1]


def test_the_operator_history_keeps_rayjobs_with_their_logs(tmp_path: Path) -> None:
    keeper = OperatorHistory(HistoryStore(tmp_path / "history.sqlite3"))
    cluster_meta = {**cluster()["metadata"], "name": "job-1-raycluster-ab12c", "uid": "uid-c"}
    keeper.cluster_changed(None, {"metadata": cluster_meta})
    job: dict[str, Any] = {"metadata": {"name": "job-1", "namespace": "team-a", "uid": "uid-j",
                                        "creationTimestamp": "2027-01-15T08:00:00Z"},
                           "status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING",
                                      "jobId": "job-1-x", "startTime": "2027-01-15T08:00:05Z",
                                      "rayClusterName": "job-1-raycluster-ab12c"}}
    keeper.job_changed(job)
    job["status"].update(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                         endTime="2027-01-15T08:01:05Z")
    assert keeper.wants_logs("uid-j")
    keeper.save_job_logs(job, "hello from the driver\n")
    assert not keeper.wants_logs("uid-j")
    store = HistoryStore(tmp_path / "history.sqlite3", readonly=True)
    (row,) = store.clusters()
    (saved,) = store.jobs(row.id)
    assert (saved.name, saved.status, saved.submission_id) == ("team-a/job-1", "SUCCEEDED",
                                                               "job-1-x")
    assert saved.ended is not None and saved.ended - saved.started == 65  # since created
    assert saved.log_path and Path(saved.log_path).read_text() == "hello from the driver\n"
    assert oct(Path(saved.log_path).stat().st_mode & 0o777) == "0o600"


def test_clusters_deleted_while_no_operator_ran_are_marked_gone(tmp_path: Path) -> None:
    keeper = OperatorHistory(HistoryStore(tmp_path / "history.sqlite3"))
    for name, ns, uid in (("a", "team-a", "u-a"), ("b", "team-a", "u-b"), ("c", "team-c", "u-c")):
        keeper.cluster_changed(None, {"metadata": {"name": name, "namespace": ns, "uid": uid,
                                                   "creationTimestamp": "2027-01-15T08:00:00Z"}})
    # watching team-a only: c is not this operator's to judge
    assert keeper.sweep_gone({"u-a"}, ["team-a"]) == 1
    rows = {r.name: r.finished for r in HistoryStore(tmp_path / "history.sqlite3",
                                                     readonly=True).clusters()}
    assert rows == {"team-a/a": False, "team-a/b": True, "team-c/c": False}
    assert keeper.sweep_gone({"u-a"}, []) == 1  # every namespace: c too


def test_a_pruned_jobs_saved_log_is_deleted_with_it(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    keeper = OperatorHistory(store)
    job: dict[str, Any] = {"metadata": {"name": "j", "namespace": "ns", "uid": "uid-j",
                                        "creationTimestamp": "2027-01-15T08:00:00Z"},
                           "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED",
                                      "endTime": "2027-01-15T08:01:00Z"}}
    keeper.save_job_logs(job, "bye\n")
    (saved,) = [Path(p) for p in (tmp_path / "history-logs").glob("rayjob-*.log")]
    other = tmp_path / "history-logs" / "notes.txt"  # not one of ours: left alone
    other.write_text("x")
    store.prune(86400, now=NOW + 10 * 86400)
    assert not saved.exists() and other.exists()
