"""The operator on the real control plane with virtual nodes: RayClusters become Ray clusters."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Pod, Service
from lightkube.types import PatchType

from rayscale.devcluster import DevCluster
from rayscale.devcluster.testing import wait_for
from rayscale.local import procs

ROOT = Path(__file__).parent.parent.parent
CRD = ROOT / "deploy" / "crds" / "ray.io_rayclusters.yaml"
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")


@pytest.fixture(scope="session")
def crd(kube: Client) -> None:
    obj = codecs.from_dict(yaml.safe_load(CRD.read_text()))
    try:
        kube.create(obj)  # type: ignore[arg-type]
    except ApiError as exc:
        if exc.status.code != 409:
            raise
    wait_for(lambda: _established(kube), 30, "the RayCluster CRD to be established")


def _established(kube: Client) -> bool:
    crd = kube.get(CustomResourceDefinition, "rayclusters.ray.io")
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def operator(dev_cluster: DevCluster, crd: None, vnode: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**os.environ, procs.MARKER: "rayscale-test-operator"}
    proc = procs.spawn(
        [sys.executable, "-m", "rayscale.cli.main", "operator",
         "--kubeconfig", str(dev_cluster.kubeconfig), "--shared-pod-network",
         "--sidecar-kubeconfig", str(dev_cluster.kubeconfig)],
        env, log,
    )
    try:
        yield proc
    finally:
        procs.stop_group(proc.pid, grace_s=10)
        proc.wait(timeout=10)
        if proc.returncode not in (0, -15, 143):
            print(log.read_text()[-5000:])


@pytest.fixture
def ns(kube: Client, namespace: str) -> Iterator[str]:
    """A test namespace whose RayClusters are deleted (and their pods collected) first."""
    yield namespace
    for obj in kube.list(RayCluster, namespace=namespace):
        kube.delete(RayCluster, obj["metadata"]["name"], namespace=namespace)
    wait_for(lambda: not list(kube.list(Pod, namespace=namespace,
                                        labels={"ray.io/is-ray-node": "yes"})), 90,
             "Ray pods collected after their RayClusters were deleted")


def manifest(name: str, replicas: int = 1, autoscaling: bool = False) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "seeds-autoscaler.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["enableInTreeAutoscaling"] = autoscaling
    group = doc["spec"]["workerGroupSpecs"][0]
    group["replicas"] = replicas
    return dict(doc)


def pods(kube: Client, ns: str, name: str, node_type: str) -> list[Pod]:
    return [p for p in kube.list(Pod, namespace=ns,
                                 labels={"ray.io/cluster": name, "ray.io/node-type": node_type})
            if p.metadata and not p.metadata.deletionTimestamp]


def running(kube: Client, ns: str, name: str, node_type: str) -> int:
    return sum(1 for p in pods(kube, ns, name, node_type)
               if p.status is not None and p.status.phase == "Running")


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
    gcs = f"{head.status.podIP}:6379"

    def ray_nodes() -> int:
        from ray._raylet import GcsClient
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        try:
            state = get_cluster_resource_state(GcsClient(address=gcs))
        except Exception:
            return 0
        return sum(1 for n in state.node_states if n.status != 2)  # 2: DEAD

    wait_for(lambda: ray_nodes() == 2, 120, "two Ray nodes (head + worker) in one cluster")
    status = wait_for(lambda: _status(kube, ns, "applied").get("state") == "ready"
                      and _status(kube, ns, "applied"), 60, "status ready")
    assert status["desiredWorkerReplicas"] == 1 and status["availableWorkerReplicas"] == 1
    assert status["head"]["podIP"] == head.status.podIP
    assert status["observedGeneration"] >= 1


def _status(kube: Client, ns: str, name: str) -> dict[str, Any]:
    obj = kube.get(RayCluster, name, namespace=ns)
    return dict(obj.get("status") or {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda g: g.update(minReplicas=3, maxReplicas=1), "maxReplicas must be >= minReplicas"),
        (lambda g: g.update(groupName="Bad_Name"), "groupName"),
        (lambda g: g.update(replicas=-1), "replicas"),
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
