"""The operator on the real control plane with virtual nodes: RayClusters become Ray clusters."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod, Service
from lightkube.types import PatchType

from tests.devtools import wait_for
from tests.k8s.operator.conftest import (
    RayCluster,
    cluster_token,
    gcs_address,
    manifest,
    pods,
    ray_node_count,
    running,
)


def test_kuberay_manifest_becomes_a_working_ray_cluster(
    kube: Client, ns: str, operator: Any
) -> None:
    doc = manifest("applied", replicas=1)
    kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
    wait_for(lambda: running(kube, ns, "applied", "head") == 1
             and running(kube, ns, "applied", "worker") == 1, 120, "head and worker pods")
    svc = kube.get(Service, "applied-head-svc", namespace=ns)
    assert svc.spec is not None and svc.spec.clusterIP == "None"
    head = pods(kube, ns, "applied", "head")[0]
    assert head.status is not None and head.status.podIP
    gcs = gcs_address(kube, ns, "applied", head.status.podIP)
    token = cluster_token(kube, ns, "applied")  # the example turns token auth on
    assert token is not None
    wait_for(lambda: ray_node_count(gcs, token) == 2, 120,
             "two Ray nodes (head + worker) in one cluster")
    status = wait_for(lambda: _status(kube, ns, "applied").get("state") == "ready"
                      and _status(kube, ns, "applied"), 60, "status ready")
    assert status["desiredWorkerReplicas"] == 1 and status["availableWorkerReplicas"] == 1
    assert status["head"]["podIP"] == head.status.podIP
    assert status["observedGeneration"] >= 1
    kinds = {c["type"]: c["status"] for c in status["conditions"]}
    assert kinds == {"HeadPodReady": "True", "RayClusterProvisioned": "True",
                     "RayClusterSuspended": "False"}
    metrics = _scrape(operator.metrics_url)
    assert metrics["rayscale_operator_reconciles_total"] > 0
    assert metrics['rayscale_operator_clusters{state="ready"}'] >= 1
    assert "rayscale_operator_errors_total" in metrics


def _scrape(url: str) -> dict[str, float]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url, timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _status(kube: Client, ns: str, name: str) -> dict[str, Any]:
    obj = kube.get(RayCluster, name, namespace=ns)
    return dict(obj.get("status") or {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda g: g.update(minReplicas=3, maxReplicas=1), "maxReplicas must be >= minReplicas"),
        (lambda g: g.update(groupName="Bad_Name"), "groupName"),
        (lambda g: g.update(replicas=-1), "replicas"),
        (lambda g: g.update(memoryTargetFraction=0), "memoryTargetFraction"),
        (lambda g: g.update(memoryTargetFraction=1.5), "memoryTargetFraction"),
    ],
)
def test_bad_manifests_are_rejected_by_the_api(
    kube: Client, ns: str, crd: None, change: Any, message: str
) -> None:
    doc = manifest("bad")
    change(doc["spec"]["workerGroupSpecs"][0])
    with pytest.raises(ApiError) as err:
        kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
    assert message in str(err.value.status.message)


def test_scaling_replicas_by_hand_adds_and_removes_pods_and_delete_cleans_up(
    kube: Client, ns: str, operator: Any
) -> None:
    kube.create(RayCluster.from_dict(manifest("byhand", replicas=0)),  # type: ignore[arg-type]
                namespace=ns)
    wait_for(lambda: running(kube, ns, "byhand", "head") == 1, 120, "head pod")
    _set_replicas(kube, ns, "byhand", 2)
    wait_for(lambda: running(kube, ns, "byhand", "worker") == 2, 120, "two workers")
    _set_replicas(kube, ns, "byhand", 1)
    wait_for(lambda: len(pods(kube, ns, "byhand", "worker")) == 1, 60, "one worker")
    kube.delete(RayCluster, "byhand", namespace=ns)
    wait_for(lambda: not list(kube.list(Pod, namespace=ns,
                                        labels={"ray.io/cluster": "byhand"})), 90,
             "every pod of the deleted cluster gone")
    wait_for(lambda: not [s for s in kube.list(Service, namespace=ns)
                          if s.metadata and s.metadata.name == "byhand-head-svc"], 60,
             "the head service gone")


def _set_replicas(kube: Client, ns: str, name: str, replicas: int) -> None:
    obj = kube.get(RayCluster, name, namespace=ns)
    groups = copy.deepcopy(obj["spec"]["workerGroupSpecs"])
    groups[0]["replicas"] = replicas
    kube.patch(RayCluster, name, {"spec": {"workerGroupSpecs": groups}}, namespace=ns,
               patch_type=PatchType.MERGE)
