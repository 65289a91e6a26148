"""Autoscaling on Kubernetes: the seeds' scenario, regular nodes first, then elastic ones."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, manifest, run_job

pytestmark = pytest.mark.e2e


def seeds_cluster(name: str) -> dict[str, Any]:
    doc = manifest(name, replicas=0, autoscaling=True)
    doc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] = 8
    regular = doc["spec"]["workerGroupSpecs"][0]
    regular.update(groupName="regular", maxReplicas=10, priority=10)
    regular["template"]["spec"]["nodeSelector"] = {"rayscale.io/pool": "regular"}
    elastic = {
        "groupName": "elastic", "replicas": 0, "minReplicas": 0, "maxReplicas": 10,
        "priority": 0, "rayStartParams": {},
        "template": {"spec": {
            "nodeSelector": {"type": "virtual-kubelet"},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Equal",
                             "value": "rayscale", "effect": "NoSchedule"}],
            "containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0",
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                          "requests": {"cpu": "1", "memory": "1Gi"}}}],
        }},
    }
    doc["spec"]["workerGroupSpecs"].append(elastic)
    head = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"] = {"limits": {"cpu": "1", "memory": "2Gi"},
                         "requests": {"cpu": "1", "memory": "2Gi"}}
    doc["spec"]["headGroupSpec"]["template"]["spec"]["nodeSelector"] = {
        "rayscale.io/pool": "regular"}
    return doc


def worker_pods(kube: Client, namespace: str, name: str) -> list[Pod]:
    return [p for p in kube.list(Pod, namespace=namespace, labels={"ray.io/cluster": name,
                                                           "ray.io/node-type": "worker"})]


def test_seeds_scenario_overflows_to_elastic_and_scales_back_through_workers_to_delete(
    kube: Client, ns: str, operator: Any
) -> None:
    kube.create(RayCluster.from_dict(seeds_cluster("seeds")), namespace=ns)  # type: ignore[arg-type]
    head = wait_for(lambda: next((p for p in kube.list(
        Pod, namespace=ns, labels={"ray.io/cluster": "seeds", "ray.io/node-type": "head"})
        if p.status and p.status.phase == "Running" and p.status.podIP), None), 120, "head pod")
    assert head.status is not None and head.spec is not None
    assert [c.name for c in head.spec.containers] == ["ray-head", "autoscaler"]

    peaks: Counter[str] = Counter()
    seen_running: Counter[str] = Counter()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            per_group: Counter[str] = Counter()
            for pod in worker_pods(kube, ns, "seeds"):
                group = (pod.metadata.labels or {}).get("ray.io/group", "?")  # type: ignore[union-attr]
                leaving = pod.metadata is not None and pod.metadata.deletionTimestamp is not None
                finished = pod.status is not None and pod.status.phase in ("Failed", "Succeeded")
                if not leaving and not finished:  # max counts running + pending, as planned
                    per_group[group] += 1
                if pod.status and pod.status.phase == "Running":
                    seen_running[group] += 1
            for group, n in per_group.items():
                peaks[group] = max(peaks[group], n)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = run_job(kube, ns, "seeds", head.status.podIP, """
            import time
            @ray.remote(num_cpus=1)
            def work(i):
                time.sleep(15)
                return ray.get_runtime_context().get_node_labels()["rayscale.io/group"]
            groups = ray.get([work.remote(i) for i in range(15)], timeout=600)
            print("DONE", len(groups), sorted(set(groups)))
        """, timeout_s=720)
        assert "DONE 15" in out, "no task lost"
        assert "elastic" in out and "regular" in out
        assert seen_running["elastic"] > 0, "demand overflowed to the elastic pool"
        # after the idle timeout every worker goes, through workersToDelete
        wait_for(lambda: not worker_pods(kube, ns, "seeds"), 240, "workers back to min (0)")
        cr = kube.get(RayCluster, "seeds", namespace=ns)
        replicas = {g["groupName"]: g.get("replicas", 0) for g in cr["spec"]["workerGroupSpecs"]}
        assert replicas == {"regular": 0, "elastic": 0}
    finally:
        stop.set()
        watcher.join()
    assert peaks["regular"] <= 10 and peaks["elastic"] <= 10, f"never above maxReplicas: {peaks}"
