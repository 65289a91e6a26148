"""GCS fault tolerance on Kubernetes, on the real control plane, with KubeRay's own sample.

``kuberay/ray-cluster.external-redis.yaml`` is applied unchanged: a Redis
Deployment (image ``redis:7.4.0``, its redis.conf from a ConfigMap through a
``subPath`` mount, a password) that the virtual node runs with this machine's
``redis-server``, and a RayCluster whose GCS keeps its tables in that Redis,
reached by the Service name ``redis``. Then the head pod is deleted: the
operator creates a new one, the existing worker pod is kept and its raylet
re-registers with the new GCS, and the sample's detached actor still has its
count. Last, a copy of the sample with in-tree autoscaling loses its head too, and
its new head's autoscaler still scales the group up for demand.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from lightkube import Client, codecs
from lightkube.resources.core_v1 import Event, Namespace, Pod, Secret

from tests.devtools import VNodeProcess, wait_for
from tests.k8s.operator.conftest import (
    OperatorProcess,
    RayCluster,
    alive_ray_nodes,
    dashboard_url,
    gcs_address,
    pods,
    run_job,
    without_shutdown_drain,
)
from tests.redisfix import Redis

SAMPLE = Path(__file__).parent / "kuberay" / "ray-cluster.external-redis.yaml"
NAME = "raycluster-external-redis"


@pytest.fixture(scope="module")
def ft_ns(kube: Client, vnode: VNodeProcess, operator: Any) -> Iterator[str]:
    """A namespace with the sample applied as written (every document of the file)."""
    name = f"t-gcsft-{uuid.uuid4().hex[:6]}"
    kube.create(Namespace.from_dict({"metadata": {"name": name}}))  # type: ignore[arg-type]
    try:
        for obj in codecs.load_all_yaml(SAMPLE.read_text()):
            kube.create(obj, namespace=name)  # type: ignore[type-var]
        yield name
    finally:
        # the RayCluster first (its pods go while Redis still runs), then the rest
        for obj in kube.list(RayCluster, namespace=name):
            kube.delete(RayCluster, obj["metadata"]["name"], namespace=name)
        wait_for(lambda: not list(kube.list(Pod, namespace=name,
                                            labels={"ray.io/is-ray-node": "yes"})), 120,
                 "the sample's Ray pods collected")
        kube.delete(Namespace, name)
        wait_for(lambda: not list(kube.list(Pod, namespace=name)), 120,
                 "the sample's Redis pod collected")


def _redis(kube: Client, ns: str) -> Redis:
    """The sample's Redis as a client sees it: its pod's address, port 6379, the password
    from the sample's Secret."""
    def running() -> Pod | None:
        return next((p for p in kube.list(Pod, namespace=ns, labels={"app": "redis"})
                     if p.status and p.status.phase == "Running" and p.status.podIP
                     and p.metadata and not p.metadata.deletionTimestamp), None)

    pod = wait_for(running, 120, "the sample's Redis pod running")
    secret = kube.get(Secret, "redis-password-secret", namespace=ns)
    assert secret.data is not None and pod.status is not None and pod.status.podIP
    password = base64.b64decode(secret.data["password"]).decode()
    return Redis(host=pod.status.podIP, port=6379, password=password, pid=0)


def _ping(redis: Redis, password: str | None = None) -> str:
    try:
        return redis.cli("PING", password=password)
    except subprocess.CalledProcessError as exc:
        return f"failed: {exc.stdout}{exc.stderr}"


def _head(kube: Client, ns: str, other_than: str | None = None, name: str = NAME) -> Pod:
    def found() -> Pod | None:
        return next((p for p in pods(kube, ns, name, "head")
                     if p.status and p.status.phase == "Running" and p.status.podIP
                     and p.metadata and p.metadata.name != other_than), None)

    return wait_for(found, 240, "a running head pod"
                    + (f" other than {other_than}" if other_than else ""))


def _ip(pod: Pod) -> str:
    assert pod.status is not None and pod.status.podIP
    return pod.status.podIP


def _alive_nodes(gcs: str) -> dict[str, str]:
    """Alive Ray nodes (node id -> node IP) of the sample, which runs without token auth."""
    return alive_ray_nodes(gcs, None)


def _two(nodes: dict[str, str]) -> dict[str, str] | None:
    return nodes if len(nodes) == 2 else None


def _run_sample_script(kube: Client, ns: str, head_ip: str, script: str) -> str:
    """Run one of the sample's scripts (its ConfigMap, mounted in the head pod at
    /home/ray/samples) as a Ray job, the way KubeRay's e2e test does; return its logs."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    url = dashboard_url(kube, ns, NAME, head_ip)

    def client() -> JobSubmissionClient | None:
        try:
            c = JobSubmissionClient(url)
            c.list_jobs()
            return c
        except Exception:
            return None

    jobs = wait_for(client, 120, "the head's job API")

    job_id = f"{script.removesuffix('.py')}-{uuid.uuid4().hex[:8]}"

    def submit() -> str | None:
        # a new head's dashboard answers before its job agent does: a submit may be cut
        # off (the connection closed without a reply); one id, so it never runs twice
        try:
            jobs.submit_job(entrypoint=shlex.join(["python", f"/home/ray/samples/{script}"]),
                            submission_id=job_id)
        except requests.exceptions.ConnectionError:
            return None
        except RuntimeError as exc:
            if "already exists" not in str(exc):
                raise
        return job_id

    job = wait_for(submit, 120, f"{script} submitted")
    deadline = time.monotonic() + 300
    while not jobs.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline, f"job {job} ({script}) still running"
        time.sleep(1)
    logs: str = jobs.get_job_logs(job)
    assert jobs.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def test_the_samples_redis_runs_from_the_redis_image(kube: Client, ft_ns: str) -> None:
    redis = _redis(kube, ft_ns)
    wait_for(lambda: _ping(redis) == "PONG", 60, "PONG from the sample's Redis")
    assert "NOAUTH" in _ping(redis, password="not-the-password")  # it has a password
    # its redis.conf (a ConfigMap key mounted by subPath) is the one it runs with
    assert redis.cli("CONFIG", "GET", "appendonly").splitlines() == ["appendonly", "yes"]


def test_the_sample_forms_a_cluster_that_keeps_its_tables_in_redis(
    kube: Client, ft_ns: str, operator: OperatorProcess
) -> None:
    wait_for(lambda: (kube.get(RayCluster, NAME, namespace=ft_ns).get("status") or {})
             .get("state") == "ready", 300, "the sample ready (head and its worker)")
    head = _head(kube, ft_ns)
    gcs = gcs_address(kube, ft_ns, NAME, _ip(head))
    wait_for(lambda: len(_alive_nodes(gcs)) == 2, 120, "head and worker in Ray's GCS")
    uid = kube.get(RayCluster, NAME, namespace=ft_ns)["metadata"]["uid"]
    redis = _redis(kube, ft_ns)
    assert redis.keys(f"*{uid}*"), "no key of the cluster's storage namespace in Redis"
    # the password stays in its Secret: the pods refer to it, the operator never prints it
    for pod in pods(kube, ft_ns, NAME, "head") + pods(kube, ft_ns, NAME, "worker"):
        assert redis.password not in json.dumps(pod.to_dict())
    assert redis.password not in operator.log.read_text()
    assert not [e for e in kube.list(Event, namespace=ft_ns)
                if redis.password in (e.message or "")]


def test_a_deleted_head_is_replaced_and_the_worker_rejoins_with_the_actor(
    kube: Client, ft_ns: str
) -> None:
    wait_for(lambda: (kube.get(RayCluster, NAME, namespace=ft_ns).get("status") or {})
             .get("state") == "ready", 300, "the sample ready (head and its worker)")
    head = _head(kube, ft_ns)
    gcs = gcs_address(kube, ft_ns, NAME, _ip(head))
    before = wait_for(lambda: _two(_alive_nodes(gcs)), 120, "head and worker in Ray's GCS")
    workers = pods(kube, ft_ns, NAME, "worker")
    assert len(workers) == 1
    worker = workers[0]
    assert worker.metadata is not None and worker.metadata.uid
    worker_node = next(n for n, ip in before.items() if ip == _ip(worker))

    _run_sample_script(kube, ft_ns, _ip(head), "detached_actor.py")
    assert _run_sample_script(kube, ft_ns, _ip(head), "increment_counter.py") \
        .strip().splitlines()[-1] == "1"

    assert head.metadata is not None and head.metadata.name
    kube.delete(Pod, head.metadata.name, namespace=ft_ns, grace_period=5)
    new_head = _head(kube, ft_ns, other_than=head.metadata.name)
    new_gcs = gcs_address(kube, ft_ns, NAME, _ip(new_head))

    def rejoined() -> dict[str, str] | None:
        nodes = _alive_nodes(new_gcs)
        return nodes if worker_node in nodes and len(nodes) == 2 else None

    after = wait_for(rejoined, 300, "the worker's raylet registered with the new head")
    assert after[worker_node] == _ip(worker)
    # the same worker pod, its container never restarted
    kept = pods(kube, ft_ns, NAME, "worker")
    assert [p.metadata.uid for p in kept if p.metadata] == [worker.metadata.uid]
    status = kept[0].status
    assert status is not None and status.containerStatuses
    assert status.containerStatuses[0].restartCount == 0
    # the detached actor kept its state through the head's replacement
    assert _run_sample_script(kube, ft_ns, _ip(new_head), "increment_counter.py") \
        .strip().splitlines()[-1] == "2"
    events = [e for e in kube.list(Event, namespace=ft_ns)
              if e.involvedObject.kind == "RayCluster" and e.reason == "CreatedHeadPod"]
    assert any("fault tolerance" in (e.message or "") for e in events), \
        [e.message for e in events]


AUTOSCALED = "ft-autoscaled"


def _autoscaled_copy() -> dict[str, Any]:
    """The sample's RayCluster with the sidecar autoscaler, 1 to 2 workers, no drain."""
    doc = next(d for d in yaml.safe_load_all(SAMPLE.read_text()) if d["kind"] == "RayCluster")
    doc["metadata"]["name"] = AUTOSCALED
    doc["spec"]["enableInTreeAutoscaling"] = True
    doc["spec"]["workerGroupSpecs"][0].update(replicas=1, minReplicas=1, maxReplicas=2)
    without_shutdown_drain(doc["spec"])
    return dict(doc)


def test_after_the_heads_replacement_demand_still_scales_the_workers(
    kube: Client, ft_ns: str
) -> None:
    # one Ray cluster at a time on this small machine: the sample's goes first
    kube.delete(RayCluster, NAME, namespace=ft_ns)
    wait_for(lambda: not pods(kube, ft_ns, NAME, "head") + pods(kube, ft_ns, NAME, "worker"),
             120, "the sample's Ray pods gone")
    kube.create(RayCluster.from_dict(_autoscaled_copy()),  # type: ignore[arg-type]
                namespace=ft_ns)
    wait_for(lambda: (kube.get(RayCluster, AUTOSCALED, namespace=ft_ns).get("status") or {})
             .get("state") == "ready", 300, "the autoscaled copy ready")
    head = _head(kube, ft_ns, name=AUTOSCALED)
    (worker,) = pods(kube, ft_ns, AUTOSCALED, "worker")
    assert head.metadata is not None and head.metadata.name
    assert worker.metadata is not None
    kube.delete(Pod, head.metadata.name, namespace=ft_ns, grace_period=5)
    new_head = _head(kube, ft_ns, other_than=head.metadata.name, name=AUTOSCALED)
    new_gcs = gcs_address(kube, ft_ns, AUTOSCALED, _ip(new_head))
    wait_for(lambda: _ip(worker) in _alive_nodes(new_gcs).values(), 300,
             "the worker's raylet registered with the new head")
    # the old head's node, restored from Redis, until the GCS marks it dead: a job
    # submitted before then may be sent to its gone agent (a 500 from the job API)
    wait_for(lambda: _ip(head) not in _alive_nodes(new_gcs).values(), 120,
             "the old head's node dead in the new GCS")

    # two 1-CPU bundles on two nodes: the kept worker and one the autoscaler adds
    logs = run_job(kube, ft_ns, AUTOSCALED, _ip(new_head), """
        from ray.util.placement_group import placement_group
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        ray.get(pg.ready(), timeout=400)
        table = ray.util.placement_group_table(pg)
        print("PLACED", len(set(table["bundles_to_node_id"].values())))
    """, timeout_s=480)
    assert "PLACED 2" in logs, logs[-2000:]  # two nodes with CPUs: the head has none
    workers = pods(kube, ft_ns, AUTOSCALED, "worker")
    assert worker.metadata.uid in [p.metadata.uid for p in workers if p.metadata]
