"""Where a queued RayJob or RayCluster stands, from Kueue's Workload conditions."""

from __future__ import annotations

from typing import Any

from rayscale.observe.kueue_view import queued, workload_state


def workload(owner: str, *conditions: tuple[str, str, str, str],
             admission: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": [{"uid": owner}]},
            "spec": {"priorityClassName": "batch-low"},
            "status": {"admission": admission,
                       "conditions": [{"type": t, "status": s, "reason": r, "message": m}
                                      for t, s, r, m in conditions]}}


def job(uid: str, queue: str | None = "team-a") -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    return {"metadata": {"name": f"job-{uid}", "namespace": "team-a", "uid": uid,
                         "labels": labels},
            "status": {"jobDeploymentStatus": "Suspended"}}


def test_states_from_conditions() -> None:
    pending = workload("a", ("QuotaReserved", "False", "Pending",
                             "couldn't assign flavors to pod set head: insufficient unused "
                             "quota for cpu in flavor default, 2 more needed"))
    assert workload_state(pending)[:2] == ("pending", pending["status"]["conditions"][0][
        "message"])
    assert workload_state(workload("b"))[0] == "pending"
    assert workload_state(workload("c", ("QuotaReserved", "False", "Inadmissible",
                                         "LocalQueue team-x doesn't exist")))[:2] == (
        "inadmissible", "LocalQueue team-x doesn't exist")
    admitted = workload("d", ("QuotaReserved", "True", "QuotaReserved", ""),
                        ("Admitted", "True", "Admitted", ""),
                        admission={"clusterQueue": "team-a-cq", "podSetAssignments": [
                            {"name": "head", "flavors": {"cpu": "regular"}},
                            {"name": "small", "flavors": {"cpu": "regular", "memory": "big"}}]})
    assert workload_state(admitted) == ("admitted", "flavors big, regular", "team-a-cq")
    preempted = workload("e", ("Admitted", "True", "Admitted", ""),
                         ("Evicted", "True", "Preempted", "Preempted to accommodate a "
                          "workload (UID: x) due to prioritization in the ClusterQueue"))
    assert workload_state(preempted)[0] == "preempted"
    assert workload_state(workload("f", ("Evicted", "True", "InactiveWorkload", "")))[0] == \
        "evicted"
    assert workload_state(workload("g", ("Finished", "True", "Succeeded", "done")))[:2] == (
        "finished", "done")
    assert workload_state(None)[0] == "no workload"


def test_only_queued_objects_are_listed_with_their_workloads() -> None:
    views = queued([("RayJob", job("1")), ("RayJob", job("2", queue=None)),
                    ("RayCluster", job("3"))],
                   [workload("1", ("Admitted", "True", "Admitted", ""),
                             admission={"clusterQueue": "cq"})])
    assert [(v.kind, v.name, v.state) for v in views] == [
        ("RayCluster", "job-3", "no workload"), ("RayJob", "job-1", "admitted")]
    assert views[1].cluster_queue == "cq" and views[1].priority == "batch-low"
    assert views[1].running == "Suspended"
