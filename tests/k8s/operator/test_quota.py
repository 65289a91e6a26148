"""Quota-aware scaling on the dev cluster (real API server, quota admission, real Ray).

The namespace has a ResourceQuota ``compute`` of 4 pods (the head and three workers);
the preferred group ``small`` also runs under a PriorityClass whose scoped quota admits
one pod, which the autoscaler does not model (a scoped quota): its second and third
pods are refused. Six 1-CPU tasks wait. What must happen:

- the autoscaler never asks for more workers than ``compute`` leaves (3), and never
  gets a pod refused by it (no ``FailedToCreateWorkerPod`` for ``elastic``);
- the pods the scoped quota refuses back ``small`` off at once, and the demand falls
  through to ``elastic``;
- the status says which limit holds the capped demand (``quota:<ns>/compute``);
- every task finishes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from typing import Any, cast

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import ConfigMap, Event, Pod, ResourceQuota
from lightkube.resources.scheduling_v1 import PriorityClass

from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, run_job
from tests.k8s.operator.test_autoscaling import seeds_cluster, worker_pods

pytestmark = pytest.mark.e2e


def quota_cluster(priority_class: str) -> dict[str, Any]:
    doc = seeds_cluster("quota")
    doc["metadata"]["name"] = "quota"
    regular, elastic = doc["spec"]["workerGroupSpecs"]
    regular["groupName"] = "small"
    regular["template"]["spec"]["priorityClassName"] = priority_class
    elastic["maxReplicas"] = 5
    return doc


def test_the_autoscaler_stays_within_the_quota_and_falls_through_on_refused_pods(
    kube: Client, ns: str, operator: Any
) -> None:
    low = f"{ns}-low"  # PriorityClasses are cluster-wide: one per test namespace
    kube.create(cast(PriorityClass, PriorityClass.from_dict({
        "metadata": {"name": low}, "value": 10})))
    try:
        run_scenario(kube, ns, low)
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(PriorityClass, low)


def run_scenario(kube: Client, ns: str, low: str) -> None:
    kube.create(cast(ResourceQuota, ResourceQuota.from_dict({
        "metadata": {"name": "compute"}, "spec": {"hard": {"pods": "4"}}})), namespace=ns)
    kube.create(cast(ResourceQuota, ResourceQuota.from_dict({
        "metadata": {"name": "low-priority"},
        "spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": [low]}]}}})),
        namespace=ns)

    def counted() -> bool:
        status = kube.get(ResourceQuota, "compute", namespace=ns).status
        return status is not None and bool(status.hard)

    wait_for(counted, 60, "the quota controller's status of the quota")
    kube.create(RayCluster.from_dict(quota_cluster(low)), namespace=ns)
    head = wait_for(lambda: next((p for p in kube.list(
        Pod, namespace=ns, labels={"ray.io/cluster": "quota", "ray.io/node-type": "head"})
        if p.status and p.status.phase == "Running" and p.status.podIP), None), 120, "head pod")
    assert head.status is not None and head.status.podIP is not None

    peaks: Counter[str] = Counter()
    ran: set[str] = set()
    limits: list[dict[str, str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            live: Counter[str] = Counter()
            for pod in worker_pods(kube, ns, "quota"):
                assert pod.metadata is not None and pod.status is not None
                group = (pod.metadata.labels or {}).get("ray.io/group", "?")
                if pod.metadata.deletionTimestamp is None and pod.status.phase not in (
                        "Failed", "Succeeded"):
                    live[group] += 1
                if pod.status.phase == "Running":
                    ran.add(group)
            peaks["total"] = max(peaks["total"], sum(live.values()))
            for group, n in live.items():
                peaks[group] = max(peaks[group], n)
            with contextlib.suppress(ApiError, ValueError):
                cm = kube.get(ConfigMap, "quota-autoscaler-status", namespace=ns)
                limited = json.loads((cm.data or {})["status.json"])["plan"].get("limited")
                if limited:
                    limits.append(limited)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = run_job(kube, ns, "quota", head.status.podIP, """
            import time
            @ray.remote(num_cpus=1)
            def work(i):
                time.sleep(8)
                return ray.get_runtime_context().get_node_labels()["rayscale.io/group"]
            groups = ray.get([work.remote(i) for i in range(6)], timeout=600)
            print("DONE", len(groups), sorted(set(groups)))
        """, timeout_s=600)
    finally:
        stop.set()
        watcher.join()
    assert "DONE 6" in out, "every task finished"
    assert peaks["total"] <= 3, f"never more workers than the quota leaves: {peaks}"
    assert peaks["small"] <= 1, peaks
    assert "elastic" in ran, "the demand fell through to elastic"
    assert any(lim.get("elastic") == f"quota:{ns}/compute" for lim in limits), limits
    refusals = [e for e in kube.list(Event, namespace=ns)
                if e.reason == "FailedToCreateWorkerPod"]
    paths = {(e.involvedObject.fieldPath if e.involvedObject else None) for e in refusals}
    assert paths == {"spec.workerGroupSpecs{small}"}, \
        f"only the scoped quota refused pods, never the one the autoscaler knows: {paths}"
