"""Kueue (built from source, scripts/build-kueue.sh) on the session's dev cluster.

The ``kueue`` session fixture (tests/k8s/conftest.py) applies Kueue's CRDs,
starts its manager with the RayJob and RayCluster integrations and applies its
webhook configurations pointed at 127.0.0.1. What these tests prove on the
real API server:

- a ResourceFlavor, a ClusterQueue (4 CPU nominal) and a LocalQueue are
  accepted (through Kueue's webhooks) and the ClusterQueue becomes Active;
- a RayJob labelled ``kueue.x-k8s.io/queue-name`` is suspended on create by
  Kueue's defaulting webhook, gets a Workload owned by it, the Workload is
  admitted (``status.admission``) and Kueue itself then unsuspends the RayJob;
- Kueue's validating webhook refuses a queued RayJob that would keep its
  cluster after the job (``shutdownAfterJobFinishes: false``);
- a RayJob without the label is left alone (``manageJobsWithoutQueueName: false``);
- a queued RayCluster goes through the same cycle (suspended, Workload admitted,
  unsuspended), and one with ``enableInTreeAutoscaling`` but without the
  ``kueue.x-k8s.io/elastic-job`` annotation is refused (an autoscaling cluster
  under Kueue must be an elastic job: tests/k8s/operator/test_kueue_elastic.py).

No operator runs here: what our operator does with a RayJob Kueue admits is
issue 16's next part.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod

from rayscale.devcluster import kueue_build
from rayscale.devcluster.kueue import QUEUE_LABEL, ClusterQueue
from rayscale.devcluster.kueue_manifests import configuration, crds, webhook_configurations
from tests.devtools import wait_for
from tests.k8s.conftest import KUEUE_BUILD_TIMEOUT_S, RunningKueue

if not kueue_build.built():
    pytestmark = pytest.mark.timeout(KUEUE_BUILD_TIMEOUT_S + 600)

ResourceFlavor = create_global_resource("kueue.x-k8s.io", "v1beta2", "ResourceFlavor",
                                        "resourceflavors")
LocalQueue = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "LocalQueue",
                                        "localqueues")
Workload = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")
RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")


@pytest.fixture(scope="module")
def queue(kueue: RunningKueue, kube: Client) -> Iterator[tuple[str, str]]:
    """A namespace with a LocalQueue on a ClusterQueue of 4 CPU / 8 GiB nominal on one
    ResourceFlavor; yields (namespace, LocalQueue name). All deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    ns, flavor, cq, lq = f"kq-{suffix}", f"rf-{suffix}", f"cq-{suffix}", "lq"
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    try:
        kube.create(ResourceFlavor.from_dict({"metadata": {"name": flavor}, "spec": {}}))
        kube.create(ClusterQueue.from_dict({
            "metadata": {"name": cq},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [{
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [{"name": flavor, "resources": [
                        {"name": "cpu", "nominalQuota": "4"},
                        {"name": "memory", "nominalQuota": "8Gi"},
                    ]}],
                }],
            },
        }))
        kube.create(LocalQueue.from_dict({"metadata": {"name": lq, "namespace": ns},
                                          "spec": {"clusterQueue": cq}}), namespace=ns)
        yield ns, lq
    finally:
        # the Workloads too, not left to the garbage collector: it watches a new CRD's
        # objects only after its next discovery resync (up to 30 s)
        for res in (RayJob, RayCluster, Workload):
            for obj in kube.list(res, namespace=ns):
                with contextlib.suppress(ApiError):
                    kube.delete(res, obj["metadata"]["name"], namespace=ns)
        wait_for(lambda: not list(kube.list(Workload, namespace=ns)), 60,
                 f"the Workloads of {ns} gone")
        # an operator running in the same session ran the admitted jobs: their pods go
        # now (Ray's drain would hold them 30 s), before the next module looks at what runs
        for pod in kube.list(Pod, namespace=ns):
            if pod.metadata is not None and pod.metadata.name is not None:
                with contextlib.suppress(ApiError):
                    kube.delete(Pod, pod.metadata.name, namespace=ns, grace_period=1)
        wait_for(lambda: not list(kube.list(Pod, namespace=ns)), 60, f"the pods of {ns} gone")
        with contextlib.suppress(ApiError):
            kube.delete(LocalQueue, lq, namespace=ns)
        for cluster_scoped, name in ((ClusterQueue, cq), (ResourceFlavor, flavor)):
            with contextlib.suppress(ApiError):
                kube.delete(cluster_scoped, name)
        kube.delete(Namespace, ns)


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def rayjob(name: str, queue_name: str | None, shutdown: bool = True) -> dict[str, Any]:
    """A RayJob whose pods ask for 0.5 CPU (head) + 2 x 0.5 CPU (workers): two such fit
    in the ClusterQueue's 4 CPU at once (the RayJob and the RayCluster tests')."""
    small = {"requests": {"cpu": "500m", "memory": "512Mi"},
             "limits": {"cpu": "500m", "memory": "512Mi"}}
    labels = {QUEUE_LABEL: queue_name} if queue_name else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "entrypoint": "python -c 'print(1)'",
            "shutdownAfterJobFinishes": shutdown,
            "rayClusterSpec": {
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                    {"name": "ray-head", "image": "rayproject/ray", "resources": small}]}}},
                "workerGroupSpecs": [{
                    "groupName": "small", "replicas": 2, "minReplicas": 2, "maxReplicas": 2,
                    "rayStartParams": {}, "template": {"spec": {"containers": [
                        {"name": "ray-worker", "image": "rayproject/ray", "resources": small}]}},
                }],
            },
        },
    }


def test_manifests_rewritten_for_loopback(kueue_binary: Path) -> None:
    """No cluster needed: the release's webhooks, narrowed to Kueue's kinds and the two
    Ray integrations, all dial 127.0.0.1 with the CA; the converted CRDs likewise."""
    manifests = kueue_build.config_dir()
    hooks = [h for doc in webhook_configurations(manifests, 4321, b"CA")
             for h in doc["webhooks"]]
    names = {h["name"] for h in hooks}
    assert {"mrayjob.kb.io", "vrayjob.kb.io", "mraycluster.kb.io", "vraycluster.kb.io",
            "mworkload.kb.io", "vclusterqueue.kb.io"} <= names, names
    assert not names & {"mpod.kb.io", "mdeployment.kb.io", "mjob.kb.io", "mrayservice.kb.io"}
    for hook in hooks:
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:4321/"), hook
        assert hook["clientConfig"]["caBundle"] == "Q0E=" and "service" not in hook["clientConfig"]
    converted = {d["metadata"]["name"] for d in crds(manifests, 4321, b"CA")
                 if "conversion" in d["spec"]}
    assert "workloads.kueue.x-k8s.io" in converted, converted
    config = configuration("kueue-system", 1, Path("/c"), 2, 3)
    assert config["integrations"]["frameworks"] == ["ray.io/rayjob", "ray.io/raycluster"]


def test_queues_accepted_and_cluster_queue_active(kueue: RunningKueue, kube: Client,
                                                  queue: tuple[str, str]) -> None:
    ns, lq = queue
    cq = kube.get(LocalQueue, lq, namespace=ns)["spec"]["clusterQueue"]
    wait_for(lambda: _conditions(kube.get(ClusterQueue, cq)).get("Active") == "True", 60,
             f"ClusterQueue {cq} Active")
    wait_for(lambda: _conditions(kube.get(LocalQueue, lq, namespace=ns)).get("Active")
             == "True", 60, f"LocalQueue {lq} Active")
    print(f"Kueue started in {kueue.start_s:.1f}s (CRDs, manager, readyz, webhooks)")


def test_queued_rayjob_suspended_then_admitted(kueue: RunningKueue, kube: Client,
                                               queue: tuple[str, str]) -> None:
    ns, lq = queue
    created = kube.create(RayJob.from_dict(rayjob("queued", lq)), namespace=ns)
    # Kueue's defaulting webhook suspends a queued job on create
    assert created["spec"].get("suspend") is True, created["spec"]
    uid = created["metadata"]["uid"]

    def workload() -> dict[str, Any] | None:
        for wl in kube.list(Workload, namespace=ns):
            owners = wl["metadata"].get("ownerReferences") or []
            if any(o["uid"] == uid for o in owners):
                return dict(wl)
        return None

    wl = wait_for(workload, 60, "the RayJob's Workload")
    assert wl["spec"]["queueName"] == lq
    podsets = {ps["name"]: ps["count"] for ps in wl["spec"]["podSets"]}
    assert podsets.get("head") == 1 and podsets.get("small") == 2, podsets

    def admission() -> dict[str, Any] | None:
        status = (kube.get(Workload, wl["metadata"]["name"], namespace=ns).get("status")
                  or {})
        return status.get("admission")

    admitted = wait_for(admission, 60, "the Workload admitted")
    assert admitted["clusterQueue"].startswith("cq-"), admitted
    # admitted: Kueue's job reconciler starts the job by unsuspending it. It writes the
    # whole object back from kuberay's Go types, where `suspend` is omitempty: false is
    # an absent field. It also labels the pod templates with the queue and podset.
    try:
        wait_for(lambda: not kube.get(RayJob, "queued", namespace=ns)["spec"].get("suspend"),
                 60, "Kueue to unsuspend the admitted RayJob")
    except TimeoutError:
        job = kube.get(RayJob, "queued", namespace=ns)
        now = kube.get(Workload, wl["metadata"]["name"], namespace=ns)
        raise AssertionError(f"RayJob {dict(job)}\nWorkload {dict(now)}") from None
    head = kube.get(RayJob, "queued", namespace=ns)["spec"]["rayClusterSpec"]["headGroupSpec"]
    labels = head["template"]["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/podset"] == "head", labels


def test_queued_rayjob_must_shut_its_cluster_down(kueue: RunningKueue, kube: Client,
                                                  queue: tuple[str, str]) -> None:
    ns, lq = queue
    with pytest.raises(ApiError) as refused:
        kube.create(RayJob.from_dict(rayjob("keeps-cluster", lq, shutdown=False)),
                    namespace=ns)
    assert "shutdownAfterJobFinishes" in str(refused.value), refused.value


def test_rayjob_without_queue_name_left_alone(kueue: RunningKueue, kube: Client,
                                              queue: tuple[str, str]) -> None:
    ns, _ = queue
    created = kube.create(RayJob.from_dict(rayjob("unqueued", None, shutdown=False)),
                          namespace=ns)
    assert not created["spec"].get("suspend"), created["spec"]
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: list(kube.list(Workload, namespace=ns, labels={
            "kueue.x-k8s.io/job-uid": created["metadata"]["uid"]})), 3, "no Workload")
        pytest.fail("Kueue made a Workload for a RayJob without a queue name")


def raycluster(name: str, queue_name: str, autoscaling: bool = False) -> dict[str, Any]:
    spec = rayjob(name, queue_name)["spec"]["rayClusterSpec"]
    if autoscaling:
        spec["enableInTreeAutoscaling"] = True
    return {"metadata": {"name": name, "labels": {QUEUE_LABEL: queue_name}}, "spec": spec}


def test_queued_raycluster_suspended_then_admitted(kueue: RunningKueue, kube: Client,
                                                   queue: tuple[str, str]) -> None:
    ns, lq = queue
    created = kube.create(RayCluster.from_dict(raycluster("rc", lq)), namespace=ns)
    assert created["spec"].get("suspend") is True, created["spec"]
    uid = created["metadata"]["uid"]

    def admitted() -> bool:
        for wl in kube.list(Workload, namespace=ns):
            if any(o["uid"] == uid for o in wl["metadata"].get("ownerReferences") or []):
                return bool((wl.get("status") or {}).get("admission"))
        return False

    wait_for(admitted, 60, "the RayCluster's Workload admitted")
    wait_for(lambda: not kube.get(RayCluster, "rc", namespace=ns)["spec"].get("suspend"), 60,
             "Kueue to unsuspend the admitted RayCluster")


def test_queued_autoscaling_raycluster_refused(kueue: RunningKueue, kube: Client,
                                               queue: tuple[str, str]) -> None:
    ns, lq = queue
    with pytest.raises(ApiError) as refused:
        kube.create(RayCluster.from_dict(raycluster("rc-auto", lq, autoscaling=True)),
                    namespace=ns)
    assert "enableInTreeAutoscaling" in str(refused.value), refused.value


def test_rayscale_queue_says_where_each_queued_job_stands_and_why(
        kueue: RunningKueue, kube: Client, queue: tuple[str, str], dev_cluster: Any) -> None:
    """`rayscale queue -n NS --json`: a RayJob bigger than its ClusterQueue waits, with
    Kueue's reason; an admitted one names its ClusterQueue."""
    import json
    import subprocess
    import sys

    ns, lq = queue
    big = rayjob("too-big", lq)
    head = big["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"] = {"requests": {"cpu": "6"}, "limits": {"cpu": "6"}}
    kube.create(RayJob.from_dict(big), namespace=ns)
    # the head alone (0.25 CPU) and no submitter pod: fits beside what the module's other
    # jobs hold (3.5 of the 4 CPU when no operator runs them to completion)
    fits = rayjob("fits", lq)
    fits["spec"]["rayClusterSpec"]["workerGroupSpecs"] = []
    fits["spec"]["submissionMode"] = "HTTPMode"
    fits_head = fits["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    fits_head["containers"][0]["resources"] = {"requests": {"cpu": "250m", "memory": "256Mi"},
                                               "limits": {"cpu": "250m", "memory": "256Mi"}}
    kube.create(RayJob.from_dict(fits), namespace=ns)

    def views() -> dict[str, dict[str, Any]] | None:
        done = subprocess.run([sys.executable, "-m", "rayscale.cli.main", "queue", "-n", ns,
                               "--kubeconfig", str(dev_cluster.kubeconfig), "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["kueue"] is True
        got = {v["name"]: v for v in doc["queued"]}
        ready = (got.get("too-big", {}).get("state") == "pending"
                 and "insufficient" in got["too-big"]["why"]
                 and got.get("fits", {}).get("state") in ("admitted", "finished"))
        return got if ready else None

    got = wait_for(views, 60, "rayscale queue: too-big pending, fits admitted")
    assert got["fits"]["cluster_queue"].startswith("cq-"), got["fits"]
    assert got["too-big"]["queue"] == lq and got["too-big"]["kind"] == "RayJob"
