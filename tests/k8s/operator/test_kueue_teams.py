"""Our operator under the real Kueue (v0.17, built from source): RayJobs run by rayscale.

Both session fixtures: ``kueue`` (Kueue's manager and webhooks on the dev cluster)
and ``operator`` (``rayscale operator``). Every RayJob here really runs Ray on the
virtual node. What is proven:

- **two teams** (:func:`test_two_teams_share_a_cohort`): two namespaces, each with a
  LocalQueue on its own ClusterQueue (4 CPU nominal each, one cohort, borrowing
  allowed). Team A's four 2-CPU jobs are all admitted while team B is idle (A borrows
  B's 4 CPU); B's two jobs, submitted next, wait until A's release quota. Each queue
  admits in creation order; the CPU held by admitted Workloads never exceeds the
  cohort's 8 at any sampled moment; every job Completes with SUCCEEDED; nothing is
  left (RayClusters, pods, submitter Jobs, Workloads).
- **flavors** (:func:`check_flavor_on_pods`, in the two-team test): the flavor's
  ``nodeLabels`` (``rayscale.io/pool: regular``) is injected by Kueue into the
  RayJob's head template on admission; the head pod our operator creates carries it
  and runs on a node of that pool.
- **preemption** (:func:`test_high_priority_preempts_low`): in a ClusterQueue with
  ``withinClusterQueue: LowerPriority``, a high WorkloadPriorityClass job evicts a
  running low one; Kueue suspends it, our operator deletes its cluster
  (``Suspended``), and it is admitted again, resumes and succeeds after the high job.
- **KubeRay's Kueue sample** (:func:`test_kuberay_kueue_toy_sample`): the vendored
  ``ray-job.kueue-toy-sample.yaml`` applied unchanged in a namespace whose LocalQueue
  is named ``default`` (Kueue's LocalQueueDefaulting, GA in v0.17, labels it) is
  suspended, admitted, unsuspended; our operator makes its cluster and the job runs.
  Its entrypoint prints for 600 s, so it is deleted once its driver's output shows.

Each job is a head-only cluster: the head asks 1500m CPU and the submitter pod
500m (Kueue counts KubeRay's default submitter for K8sJobMode, which our CRD now
defaults as KubeRay's does), 2 CPU per job; at most four heads run at once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Node, Pod

from rayscale.api.quantity import parse_quantity
from rayscale.devcluster.kueue import QUEUE_LABEL, ClusterQueue
from rayscale.labels import POOL_LABEL
from tests.devtools import wait_for
from tests.k8s.conftest import RunningKueue
from tests.k8s.operator.conftest import RayCluster
from tests.k8s.operator.test_rayjob import small_job

pytestmark = pytest.mark.timeout(600)

ResourceFlavor = create_global_resource("kueue.x-k8s.io", "v1beta2", "ResourceFlavor",
                                        "resourceflavors")
WorkloadPriorityClass = create_global_resource("kueue.x-k8s.io", "v1beta2",
                                               "WorkloadPriorityClass",
                                               "workloadpriorityclasses")
LocalQueue = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "LocalQueue",
                                        "localqueues")
Workload = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")
RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
KUBERAY = Path(__file__).parent / "kuberay"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
COHORT_CPU = Decimal(8)


# ------------------------------------------------------------------ helpers


def rayjob(name: str, queue: str | None, entrypoint: str = "python -c \"print('hi')\"",
           head_cpu: str = "1500m", priority: str | None = None) -> dict[str, Any]:
    """A head-only RayJob: head ``head_cpu`` + KubeRay's default submitter (500m)."""
    job = small_job(name, entrypoint, shutdownAfterJobFinishes=True,
                    ttlSecondsAfterFinished=1)
    cluster = job["spec"]["rayClusterSpec"]
    cluster.pop("workerGroupSpecs")
    cluster["headGroupSpec"]["rayStartParams"] = {"num-cpus": "1"}
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"] = {"requests": {"cpu": head_cpu, "memory": "1Gi"},
                         "limits": {"cpu": head_cpu, "memory": "2Gi"}}
    labels = {QUEUE_LABEL: queue} if queue else {}
    if priority:
        labels[PRIORITY_LABEL] = priority
    job["metadata"]["labels"] = labels
    return job


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def holds_quota(wl: dict[str, Any]) -> bool:
    cond = conditions(wl)
    return cond.get("QuotaReserved") == "True" and cond.get("Finished") != "True"


def admitted_cpu(wl: dict[str, Any]) -> Decimal:
    admission = (wl.get("status") or {}).get("admission") or {}
    return sum((parse_quantity((ps.get("resourceUsage") or {}).get("cpu", "0"))
                for ps in admission.get("podSetAssignments") or []), Decimal(0))


def owner_name(wl: dict[str, Any]) -> str:
    owners = wl["metadata"].get("ownerReferences") or []
    return next((o["name"] for o in owners if o["kind"] == "RayJob"), "")


def describe(kube: Client, ns: str) -> str:
    """What a failure message shows: the namespace's RayJobs, clusters, pods, Workloads."""
    lines = []
    for job in kube.list(RayJob, namespace=ns):
        lines.append(f"RayJob {job['metadata']['name']} suspend="
                     f"{job['spec'].get('suspend')} status={job.get('status')}")
    for rc in kube.list(RayCluster, namespace=ns):
        lines.append(f"RayCluster {rc['metadata']['name']} status={rc.get('status')}")
    for pod in kube.list(Pod, namespace=ns):
        assert pod.metadata is not None
        lines.append(f"Pod {pod.metadata.name} node={pod.spec.nodeName if pod.spec else None}"
                     f" phase={pod.status.phase if pod.status else None}"
                     f" conditions={pod.status.conditions if pod.status else None}")
    for wl in kube.list(Workload, namespace=ns):
        lines.append(f"Workload of {owner_name(wl)} conditions={conditions(wl)}")
    return "\n".join(lines)


def job_status(kube: Client, ns: str, name: str) -> dict[str, Any]:
    return dict(kube.get(RayJob, name, namespace=ns).get("status") or {})


def wait_job(kube: Client, ns: str, name: str, wanted: str, timeout_s: float = 240
             ) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = job_status(kube, ns, name)
        now = st.get("jobDeploymentStatus")
        assert now == wanted or now not in ("Complete", "Failed", "ValidationFailed"), st
        return st if now == wanted else None

    try:
        return wait_for(check, timeout_s, f"RayJob {ns}/{name} {wanted}", interval_s=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status now {job_status(kube, ns, name)}\n"
                             f"{describe(kube, ns)}") from None


def leftovers(kube: Client, ns: str) -> dict[str, int]:
    found = {"RayJob": len(list(kube.list(RayJob, namespace=ns))),
             "RayCluster": len(list(kube.list(RayCluster, namespace=ns))),
             "Job": len(list(kube.list(Job, namespace=ns))),
             "Pod": len(list(kube.list(Pod, namespace=ns))),
             "Workload": len(list(kube.list(Workload, namespace=ns)))}
    return {k: v for k, v in found.items() if v}


def nothing_left(kube: Client, ns: str) -> bool:
    return not leftovers(kube, ns)


def delete_jobs_and_check_nothing_left(kube: Client, namespaces: list[str]) -> None:
    """Delete the RayJobs; their RayClusters, submitter Jobs, pods and Workloads must
    all be collected (owner references: nothing is deleted by hand)."""
    for ns in namespaces:
        for obj in kube.list(RayJob, namespace=ns):
            kube.delete(RayJob, obj["metadata"]["name"], namespace=ns)
    for ns in namespaces:
        try:
            wait_for(functools.partial(nothing_left, kube, ns), 90, f"nothing left in {ns}")
        except TimeoutError:
            raise AssertionError(f"left in {ns}: {leftovers(kube, ns)}") from None


def sweep(kube: Client, ns: str) -> None:
    """Teardown after a failure: delete what a test may have left, Workloads too."""
    for res in (RayJob, RayCluster, Workload):
        for obj in kube.list(res, namespace=ns):
            with contextlib.suppress(ApiError):
                kube.delete(res, obj["metadata"]["name"], namespace=ns)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not list(kube.list(Workload, namespace=ns))
                 and not list(kube.list(Pod, namespace=ns)), 90, f"{ns} empty")
    for pod in kube.list(Pod, namespace=ns):
        assert pod.metadata is not None and pod.metadata.name is not None
        with contextlib.suppress(ApiError):
            kube.delete(Pod, pod.metadata.name, namespace=ns, grace_period=0)


@contextlib.contextmanager
def kueue_objects(kube: Client, namespaces: list[str], cluster_scoped: list[Any]
                  ) -> Iterator[Callable[[Any], Any]]:
    """Namespaces created; yields ``add(obj)`` to create cluster-scoped Kueue objects
    (or LocalQueues); afterwards everything is deleted, namespaced first."""
    made: list[tuple[Any, str, str | None]] = []

    def add(obj: Any) -> Any:
        ns = obj["metadata"].get("namespace")
        created = kube.create(obj, namespace=ns) if ns else kube.create(obj)
        made.append((type(obj), obj["metadata"]["name"], ns))
        return created

    for ns in namespaces:
        kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    try:
        for obj in cluster_scoped:
            add(obj)
        yield add
    finally:
        for ns in namespaces:
            sweep(kube, ns)
        for res, name, ns in reversed(made):
            with contextlib.suppress(ApiError):
                if ns:
                    kube.delete(res, name, namespace=ns)
                else:
                    kube.delete(res, name)
        for ns in namespaces:
            with contextlib.suppress(ApiError):
                kube.delete(Namespace, ns)


def cluster_queue(name: str, flavor: str, cpu: str, cohort: str | None = None,
                  preemption: dict[str, str] | None = None) -> Any:
    spec: dict[str, Any] = {
        "namespaceSelector": {},
        "queueingStrategy": "StrictFIFO",
        "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
            "name": flavor, "resources": [{"name": "cpu", "nominalQuota": cpu},
                                          {"name": "memory", "nominalQuota": "8Gi"}]}]}],
    }
    if cohort:
        spec["cohortName"] = cohort
    if preemption:
        spec["preemption"] = preemption
    return ClusterQueue.from_dict({"metadata": {"name": name}, "spec": spec})


def local_queue(ns: str, name: str, cq: str) -> Any:
    return LocalQueue.from_dict({"metadata": {"name": name, "namespace": ns},
                                 "spec": {"clusterQueue": cq}})


def active(kube: Client, cq: str) -> bool:
    return conditions(kube.get(ClusterQueue, cq)).get("Active") == "True"


def wait_active(kube: Client, cqs: list[str]) -> None:
    for cq in cqs:
        wait_for(functools.partial(active, kube, cq), 60, f"ClusterQueue {cq} Active")


@dataclass
class Sampler:
    """Polls the Workloads of some namespaces on a thread: the CPU held by admitted
    (quota-reserved, unfinished) Workloads per namespace at each sample, and when
    each RayJob's Workload was first seen holding quota."""

    kube: Client
    namespaces: list[str]
    interval_s: float = 0.25
    samples: list[dict[str, Decimal]] = field(default_factory=list)
    first_admitted: dict[tuple[str, str], float] = field(default_factory=dict)
    order_violations: list[str] = field(default_factory=list)
    created: dict[str, list[str]] = field(default_factory=dict)  # ns -> jobs in order
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except ApiError as exc:  # a transient error: the next sample
                self.errors.append(exc)
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        now = time.monotonic()
        held: dict[str, Decimal] = {}
        for ns in self.namespaces:
            admitted_ever: set[str] = set()
            total = Decimal(0)
            for wl in self.kube.list(Workload, namespace=ns):
                job = owner_name(wl)
                if holds_quota(wl):
                    total += admitted_cpu(wl)
                    self.first_admitted.setdefault((ns, job), now)
                if (ns, job) in self.first_admitted:
                    admitted_ever.add(job)
            held[ns] = total
            # in order: the jobs ever admitted are a prefix of the creation order
            order = self.created.get(ns, [])
            prefix = order[:len(admitted_ever)]
            if set(prefix) != admitted_ever & set(order):
                self.order_violations.append(f"{ns}: admitted {sorted(admitted_ever)} "
                                             f"of {order}")
        self.samples.append(held)


def check_flavor_on_pods(kube: Client, ns: str, name: str) -> None:
    """Kueue wrote the admitted flavor's ``nodeLabels`` into the RayJob's head template
    as a nodeSelector; the head pod our operator made carries it and runs on a node
    of that pool."""
    def head() -> Pod | None:
        cluster = job_status(kube, ns, name).get("rayClusterName")
        if not cluster:
            return None
        pods = list(kube.list(Pod, namespace=ns, labels={"ray.io/cluster": cluster,
                                                         "ray.io/node-type": "head"}))
        return pods[0] if pods and pods[0].spec and pods[0].spec.nodeName else None

    try:
        pod = wait_for(head, 60, f"{name}'s head pod scheduled")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(kube, ns)}") from None
    template = kube.get(RayJob, name, namespace=ns)["spec"]["rayClusterSpec"][
        "headGroupSpec"]["template"]
    assert template["spec"].get("nodeSelector") == {POOL_LABEL: "regular"}, template
    assert pod.spec is not None and pod.spec.nodeSelector == {POOL_LABEL: "regular"}
    node = kube.get(Node, pod.spec.nodeName or "")
    assert node.metadata is not None and node.metadata.labels is not None
    assert node.metadata.labels[POOL_LABEL] == "regular"


# -------------------------------------------------------------------- tests


def test_two_teams_share_a_cohort(kueue: RunningKueue, operator: Any, kube: Client) -> None:
    sfx = uuid.uuid4().hex[:5]
    ns_a, ns_b = f"team-a-{sfx}", f"team-b-{sfx}"
    flavor, cq_a, cq_b, cohort = f"regular-{sfx}", f"cq-a-{sfx}", f"cq-b-{sfx}", f"co-{sfx}"
    rf = ResourceFlavor.from_dict({"metadata": {"name": flavor},
                                   "spec": {"nodeLabels": {POOL_LABEL: "regular"}}})
    with kueue_objects(kube, [ns_a, ns_b], [
        rf, cluster_queue(cq_a, flavor, "4", cohort), cluster_queue(cq_b, flavor, "4", cohort),
    ]) as add:
        add(local_queue(ns_a, "lq", cq_a))
        add(local_queue(ns_b, "lq", cq_b))
        wait_active(kube, [cq_a, cq_b])
        a_jobs, b_jobs = [f"a{i}" for i in range(1, 5)], ["b1", "b2"]
        with Sampler(kube, [ns_a, ns_b]) as sampler:
            sampler.created = {ns_a: a_jobs, ns_b: b_jobs}
            t0 = time.monotonic()
            # a second apart: Kueue orders a queue by creationTimestamp (whole seconds)
            for name in a_jobs:
                kube.create(RayJob.from_dict(rayjob(name, "lq")), namespace=ns_a)
                time.sleep(1.05)
            # B idle: all four of A's are admitted, 8 CPU on a 4 CPU nominal quota
            wait_for(lambda: sum(1 for k in sampler.first_admitted if k[0] == ns_a) == 4,
                     60, "team A's four jobs admitted (borrowing B's idle quota)")
            check_flavor_on_pods(kube, ns_a, "a1")
            usage = kube.get(ClusterQueue, cq_a)["status"].get("flavorsUsage") or []
            cpu = next(r for u in usage for r in u["resources"] if r["name"] == "cpu")
            assert parse_quantity(cpu.get("borrowed", "0")) == 4, usage
            for name in b_jobs:
                kube.create(RayJob.from_dict(rayjob(name, "lq")), namespace=ns_b)
                time.sleep(1.05)
            # the cohort is full: B's wait for A's to release quota (no reclaim policy)
            time.sleep(1)
            assert not any(k[0] == ns_b for k in sampler.first_admitted), \
                "team B admitted while the cohort's 8 CPU were held by team A"
            for name in a_jobs:
                st = wait_job(kube, ns_a, name, "Complete")
                assert st["jobStatus"] == "SUCCEEDED", st
            print(f"two teams: A's four Complete at {time.monotonic() - t0:.1f}s")
            for name in b_jobs:
                st = wait_job(kube, ns_b, name, "Complete")
                assert st["jobStatus"] == "SUCCEEDED", st
            print(f"two teams: B's two Complete at {time.monotonic() - t0:.1f}s")
        assert not sampler.order_violations, sampler.order_violations[:5]
        peak = max(sum(s.values(), Decimal(0)) for s in sampler.samples)
        assert peak <= COHORT_CPU, peak
        assert peak == COHORT_CPU  # A's four at once
        first_b = min(sampler.first_admitted[(ns_b, j)] for j in b_jobs)
        assert first_b > min(sampler.first_admitted[(ns_a, j)] for j in a_jobs)
        print(f"two teams: {len(sampler.samples)} samples, peak admitted CPU {peak}, "
              f"B first admitted {first_b - min(sampler.first_admitted.values()):.1f}s "
              f"after A's first")

        t1 = time.monotonic()
        delete_jobs_and_check_nothing_left(kube, [ns_a, ns_b])
        print(f"two teams: all collected in {time.monotonic() - t1:.1f}s")


def test_high_priority_preempts_low(kueue: RunningKueue, operator: Any, kube: Client) -> None:
    sfx = uuid.uuid4().hex[:5]
    ns, flavor, cq = f"prio-{sfx}", f"rf-p-{sfx}", f"cq-p-{sfx}"
    low, high = f"low-{sfx}", f"high-{sfx}"
    classes = [WorkloadPriorityClass.from_dict({"metadata": {"name": n}, "value": v})
               for n, v in ((low, 100), (high, 1000))]
    with kueue_objects(kube, [ns], [
        ResourceFlavor.from_dict({"metadata": {"name": flavor}, "spec": {}}),
        *classes,
        cluster_queue(cq, flavor, "4", preemption={"withinClusterQueue": "LowerPriority"}),
    ]) as add:
        add(local_queue(ns, "lq", cq))
        wait_active(kube, [cq])
        # 3 CPU each (head 2.5 + submitter 0.5): the two never fit together in 4
        sleepy = "python -c \"import time; time.sleep(10); print('low done')\""
        kube.create(RayJob.from_dict(rayjob("low", "lq", sleepy, "2500m", low)),
                    namespace=ns)
        first = wait_job(kube, ns, "low", "Running")
        first_cluster = first["rayClusterName"]
        kube.create(RayJob.from_dict(rayjob("high", "lq", head_cpu="2500m", priority=high)),
                    namespace=ns)
        # Kueue evicts low's Workload and suspends the RayJob; our operator deletes
        # its cluster and reports Suspended
        st = wait_job(kube, ns, "low", "Suspended", 60)
        assert kube.get(RayJob, "low", namespace=ns)["spec"].get("suspend") is True
        wait_for(lambda: all(c["metadata"]["name"] != first_cluster
                             for c in kube.list(RayCluster, namespace=ns)),
            60, "the preempted job's cluster deleted")
        wls = {owner_name(w): w for w in kube.list(Workload, namespace=ns)}
        assert conditions(wls["low"]).get("Evicted") == "True" or \
            conditions(wls["low"]).get("QuotaReserved") != "True", wls["low"].get("status")
        high_st = wait_job(kube, ns, "high", "Complete")
        assert high_st["jobStatus"] == "SUCCEEDED", high_st
        st = wait_job(kube, ns, "low", "Complete")
        assert st["jobStatus"] == "SUCCEEDED", st
        assert st["rayClusterName"] != first_cluster  # a new cluster after the resume
        # low finished after high: it ran to completion only once high was done
        assert st["endTime"] >= high_st["endTime"], (st, high_st)
        delete_jobs_and_check_nothing_left(kube, [ns])


def test_kuberay_kueue_toy_sample(kueue: RunningKueue, operator: Any, kube: Client) -> None:
    sfx = uuid.uuid4().hex[:5]
    ns, flavor, cq = f"toy-{sfx}", f"rf-t-{sfx}", f"cq-t-{sfx}"
    sample = yaml.safe_load((KUBERAY / "ray-job.kueue-toy-sample.yaml").read_text())
    assert QUEUE_LABEL not in (sample["metadata"].get("labels") or {})
    with kueue_objects(kube, [ns], [
        ResourceFlavor.from_dict({"metadata": {"name": flavor}, "spec": {}}),
        cluster_queue(cq, flavor, "4"),
    ]) as add:
        # LocalQueueDefaulting: a queue named "default" takes the namespace's unlabelled jobs
        add(local_queue(ns, "default", cq))
        wait_active(kube, [cq])
        wait_for(lambda: conditions(kube.get(LocalQueue, "default", namespace=ns)).get(
            "Active") == "True", 60, "LocalQueue default Active")
        created = kube.create(RayJob.from_dict(sample), namespace=ns)
        name = created["metadata"]["name"]
        assert name.startswith("rayjob-sample-")
        assert created["metadata"]["labels"][QUEUE_LABEL] == "default"
        assert created["spec"]["suspend"] is True
        assert created["spec"]["submissionMode"] == "K8sJobMode"  # the CRD's default

        def workload() -> dict[str, Any] | None:
            return next((dict(w) for w in kube.list(Workload, namespace=ns)
                         if owner_name(w) == name and holds_quota(w)), None)

        wl = wait_for(workload, 60, "the sample's Workload admitted")
        podsets = {ps["name"]: ps["count"] for ps in wl["spec"]["podSets"]}
        assert podsets == {"head": 1, "small-group": 1, "submitter": 1}, podsets
        # head 1 + worker 1 + KubeRay's default submitter 0.5
        assert admitted_cpu(wl) == Decimal("2.5"), wl["status"]["admission"]
        st = wait_job(kube, ns, name, "Running", 180)
        cluster = st["rayClusterName"]
        assert kube.get(RayCluster, cluster, namespace=ns)["status"]["state"] == "ready"
        # the driver prints ray.cluster_resources() each second for 600 s: its first
        # lines show the head and the worker (2 CPU); then the job is deleted
        submitters = [p for p in kube.list(Pod, namespace=ns)
                      if p.metadata and (p.metadata.labels or {}).get("job-name") == name]
        assert submitters, [p.metadata.name for p in kube.list(Pod, namespace=ns)
                            if p.metadata]
        assert submitters[0].metadata is not None and submitters[0].metadata.name
        submitter = submitters[0].metadata.name

        def logs() -> str | None:
            try:
                text = "\n".join(kube.log(submitter, namespace=ns))
            except ApiError:
                return None
            return text if "'CPU': 2.0" in text else None

        out = wait_for(logs, 120, "the sample's driver printing the cluster's 2 CPU", 1.0)
        assert "iter: " in out
        # the sample's pods keep Ray's 30 s drain on SIGTERM (unchanged: no NO_DRAIN
        # env): once its RayJob is deleted its pods are ended at once, to save the 30 s
        kube.delete(RayJob, name, namespace=ns)
        wait_for(lambda: not list(kube.list(RayJob, namespace=ns))
                 and not list(kube.list(RayCluster, namespace=ns)), 30,
                 "the RayJob and its RayCluster gone")
        for pod in kube.list(Pod, namespace=ns):
            assert pod.metadata is not None and pod.metadata.name is not None
            with contextlib.suppress(ApiError):
                kube.delete(Pod, pod.metadata.name, namespace=ns, grace_period=0)
        delete_jobs_and_check_nothing_left(kube, [ns])

