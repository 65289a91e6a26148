"""Autoscaling on Kubernetes: the seeds' scenario, regular nodes first, then elastic ones."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from rayscale.history.store import HistoryStore
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


def rayscale_status(kubeconfig: Any, ns: str, name: str) -> tuple[int, dict[str, Any]]:
    """`rayscale status NAME -n NS --json`: its exit code and document."""
    done = subprocess.run([sys.executable, "-m", "rayscale.cli.main", "status", name, "-n", ns,
                           "--kubeconfig", str(kubeconfig), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_seeds_scenario_overflows_to_elastic_and_scales_back_through_workers_to_delete(
    kube: Client, ns: str, operator: Any, dev_cluster: Any
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
    scaled_up_status: list[tuple[int, dict[str, Any]]] = []  # `rayscale status` mid-run

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
            if seen_running["elastic"] and not scaled_up_status:
                scaled_up_status.append(rayscale_status(dev_cluster.kubeconfig, ns, "seeds"))
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
    check_status_and_history(kube, ns, operator, dev_cluster, scaled_up_status)


def check_status_and_history(kube: Client, ns: str, operator: Any, dev_cluster: Any,
                             scaled_up: list[tuple[int, dict[str, Any]]]) -> None:
    """`rayscale status -n` showed the scale-up as it happened and shows the cluster back at
    its minimum now; the operator's history holds the rounds and the scaling events with
    their reasons, and marks the cluster gone once it is deleted."""
    assert scaled_up, "rayscale status ran while elastic workers ran"
    code, mid = scaled_up[0]
    assert code == 0 and mid["state"] == "running", mid["problems"]
    assert mid["name"] == f"{ns}/seeds" and mid["autoscaler_running"]
    up = mid["groups"]
    assert up["regular"]["running"] + up["regular"]["pending"] > 0
    assert up["elastic"]["max"] == 10 and up["regular"]["min"] == 0
    assert any(e["kind"] == "launch" for e in mid["events"])

    def settled() -> dict[str, Any] | None:
        code, doc = rayscale_status(dev_cluster.kubeconfig, ns, "seeds")
        groups = doc["groups"]
        idle = all(g["running"] + g["pending"] == 0 for g in groups.values())
        workers = [n for n in doc["nodes"] if n["group"] in groups]  # the head is listed too
        return doc if code == 0 and idle and not workers else None

    now = wait_for(settled, 60, "rayscale status shows no worker")
    assert any(e["kind"] == "stop" for e in now["events"]), now["events"]
    assert now["kubernetes"]["status"]["state"] == "ready"

    store = HistoryStore(operator.history, readonly=True)
    try:
        (row,) = [r for r in store.clusters() if r.name == f"{ns}/seeds"]
        assert row.mode == "kubernetes" and not row.finished
        line = store.timeline(row.id)
        kinds = {e.kind for e in line.events}
        assert {"launch", "stop"} <= kinds, kinds
        launches = [e for e in line.events if e.kind == "launch"]
        assert any((e.detail or "").startswith("demand: ") for e in launches), launches
        peak = {g: max(n for _, n in line.counts.get((g, "running"), [(0, 0)]))
                for g in ("regular", "elastic")}
        assert peak["regular"] > 0 and peak["elastic"] > 0, peak
        kube.delete(RayCluster, "seeds", namespace=ns)
        wait_for(lambda: next(r for r in store.clusters() if r.id == row.id).finished, 60,
                 "the deleted cluster marked gone in the history")
    finally:
        store.close()
