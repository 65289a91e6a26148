"""An autoscaling RayCluster under Kueue: an elastic job (workload slices) that our
autoscaler grows and shrinks within what Kueue will admit.

The dev Kueue runs with the alpha gate ``ElasticJobsViaWorkloadSlices`` on
(devcluster/kueue_manifests.py). The RayCluster is labelled with its LocalQueue
and annotated ``kueue.x-k8s.io/elastic-job: "true"``; Kueue gates its pod
templates, and each rise of ``replicas`` is a new workload slice Kueue admits
whole or not at all (then it ungates the pods).

Team ClusterQueue: 2 CPU nominal, in a cohort with an idle 1-CPU ClusterQueue
that lends: 3 CPU in all, the head's 1 and two 1-CPU workers. Four 1-CPU tasks
wait. What must happen:

- the autoscaler never asks for more than Kueue can admit: ``replicas`` never
  passes 2, and no workload slice ever waits for quota it cannot get;
- both workers are admitted (one borrowed CPU), the capped demand is reported
  against ``quota:clusterqueue/<team queue>``, and every task finishes;
- the flavor's node labels and toleration, injected by Kueue, bring the pods onto
  the tainted elastic pool (the templates have neither);
- after the work the cluster shrinks to no workers and its Workload with it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import ConfigMap, Node, Pod

from rayscale.devcluster.kueue import QUEUE_LABEL, ClusterQueue
from rayscale.labels import POOL_LABEL
from rayscale.providers.kube_kueue import ELASTIC_ANNOTATION, ELASTIC_GATE
from tests.devtools import wait_for
from tests.k8s.conftest import RunningKueue
from tests.k8s.operator.conftest import RayCluster, run_job
from tests.k8s.operator.test_autoscaling import seeds_cluster, worker_pods
from tests.k8s.operator.test_kueue_teams import (
    ResourceFlavor,
    Workload,
    kueue_objects,
    local_queue,
    wait_active,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ELASTIC_TAINT = {"key": "virtual-kubelet.io/provider", "operator": "Equal",
                 "value": "rayscale", "effect": "NoSchedule"}


def cluster_queue(name: str, flavor: str, cpu: str, cohort: str,
                  lending: str | None = None) -> Any:
    cpu_quota = {"name": "cpu", "nominalQuota": cpu}
    if lending is not None:
        cpu_quota["lendingLimit"] = lending
    return ClusterQueue.from_dict({"metadata": {"name": name}, "spec": {
        "namespaceSelector": {}, "cohortName": cohort,
        "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
            "name": flavor, "resources": [cpu_quota,
                                          {"name": "memory", "nominalQuota": "16Gi"}]}]}],
    }})


def elastic_cluster(name: str, queue: str) -> dict[str, Any]:
    doc = seeds_cluster(name)
    doc["metadata"].update(name=name, labels={QUEUE_LABEL: queue},
                           annotations={ELASTIC_ANNOTATION: "true"})
    group = doc["spec"]["workerGroupSpecs"][1]
    group["maxReplicas"] = 4
    # no placement of their own: the flavor's (Kueue injects it on admission)
    del group["template"]["spec"]["nodeSelector"], group["template"]["spec"]["tolerations"]
    del doc["spec"]["headGroupSpec"]["template"]["spec"]["nodeSelector"]
    doc["spec"]["workerGroupSpecs"] = [group]
    return doc


def gated(pod: Pod) -> bool:
    return any(g.name == ELASTIC_GATE for g in (pod.spec.schedulingGates if pod.spec else None)
               or [])


def test_elastic_raycluster_grows_within_what_kueue_admits(
        kueue: RunningKueue, operator: Any, kube: Client) -> None:
    sfx = uuid.uuid4().hex[:5]
    ns, flavor, team, lender, cohort = (f"elastic-{sfx}", f"rf-{sfx}", f"cq-team-{sfx}",
                                        f"cq-lender-{sfx}", f"co-{sfx}")
    rf = ResourceFlavor.from_dict({"metadata": {"name": flavor}, "spec": {
        "nodeLabels": {POOL_LABEL: "elastic"}, "tolerations": [ELASTIC_TAINT]}})
    with kueue_objects(kube, [ns], [rf, cluster_queue(team, flavor, "2", cohort),
                                     cluster_queue(lender, flavor, "1", cohort, lending="1")
                                     ]) as add:
        add(local_queue(ns, "lq", team))
        wait_active(kube, [team, lender])
        kube.create(RayCluster.from_dict(elastic_cluster("el", "lq")), namespace=ns)
        head = wait_for(lambda: next((p for p in kube.list(
            Pod, namespace=ns, labels={"ray.io/cluster": "el", "ray.io/node-type": "head"})
            if p.status and p.status.phase == "Running" and p.status.podIP), None), 120,
            "the head admitted and running")
        assert head.status is not None and head.status.podIP is not None
        head_ip = head.status.podIP
        seen = watch_during(kube, ns, lambda: run_job(kube, ns, "el", head_ip, """
            import time
            @ray.remote(num_cpus=1)
            def work(i):
                time.sleep(10)
                return i
            print("DONE", len(ray.get([work.remote(i) for i in range(4)], timeout=400)))
        """, timeout_s=420))
        assert "DONE 4" in seen.output, seen.output[-2000:]
        assert seen.max_replicas == 2, f"asked for what Kueue can admit: {seen.max_replicas}"
        assert seen.max_admitted == 2, "both workers admitted, one CPU borrowed"
        assert not seen.starved, f"a slice waited for quota it cannot get: {seen.starved}"
        assert f"quota:clusterqueue/{team}" in seen.limits, seen.limits
        for pod in seen.pods:  # the flavor's labels and toleration: the elastic pool
            assert pod.spec is not None and pod.spec.nodeSelector == {POOL_LABEL: "elastic"}
            assert ELASTIC_TAINT in [t.to_dict() for t in pod.spec.tolerations or []]
            node = kube.get(Node, pod.spec.nodeName or "")
            assert node.metadata is not None and node.metadata.labels is not None
            assert node.metadata.labels[POOL_LABEL] == "elastic"

        def shrunk() -> bool:
            workloads = [w for w in kube.list(Workload, namespace=ns)
                         if not finished(w)]
            counts = [ps["count"] for w in workloads for ps in w["spec"]["podSets"]
                      if ps["name"] != "head"]
            return not worker_pods(kube, ns, "el") and counts == [0]
        wait_for(shrunk, 120, "no workers left, the Workload shrunk to the head")


def finished(workload: Any) -> bool:
    return any(c["type"] == "Finished" and c["status"] == "True"
               for c in (workload.get("status") or {}).get("conditions") or [])


class Seen:
    def __init__(self) -> None:
        self.output = ""
        self.max_replicas = 0
        self.max_admitted = 0
        self.starved: list[str] = []
        self.limits: set[str] = set()
        self.pods: list[Pod] = []


def watch_during(kube: Client, ns: str, work: Any) -> Seen:
    """Run ``work`` while sampling the cluster, its pods, Workloads and status."""
    seen = Seen()
    stop = threading.Event()
    ran: dict[str, Pod] = {}

    def sample() -> None:
        spec = kube.get(RayCluster, "el", namespace=ns)["spec"]
        seen.max_replicas = max(seen.max_replicas,
                                spec["workerGroupSpecs"][0].get("replicas") or 0)
        live = [p for p in worker_pods(kube, ns, "el")
                if p.metadata is not None and p.metadata.deletionTimestamp is None]
        seen.max_admitted = max(seen.max_admitted, sum(1 for p in live if not gated(p)))
        for pod in live:
            if pod.status is not None and pod.status.phase == "Running" and pod.metadata:
                ran[pod.metadata.name or ""] = pod
        for wl in kube.list(Workload, namespace=ns):
            for cond in (wl.get("status") or {}).get("conditions") or []:
                if (cond["type"] == "QuotaReserved" and cond["status"] == "False"
                        and "insufficient" in cond.get("message", "")):
                    seen.starved.append(cond["message"])
        with contextlib.suppress(ApiError, KeyError, ValueError):
            cm = kube.get(ConfigMap, "el-autoscaler-status", namespace=ns)
            limited = json.loads((cm.data or {})["status.json"])["plan"].get("limited") or {}
            seen.limits.update(limited.values())

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(ApiError):
                sample()
            time.sleep(0.5)

    watcher = threading.Thread(target=loop, daemon=True)
    watcher.start()
    try:
        seen.output = work()
    finally:
        stop.set()
        watcher.join(10)
    seen.pods = list(ran.values())
    assert seen.pods, "no worker ever ran"
    return seen
