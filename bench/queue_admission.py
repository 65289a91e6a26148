"""Queued RayJobs through Kueue: admissions per second, admission to pods, vs no Kueue.

One run, one dev control plane (built from source), one **fake-run** virtual node
(pods are reported Running, no process and no Ray starts: what is timed is the
control plane, Kueue and rayscale's operator, not Ray), rayscale's operator and
Kueue v0.17 (scripts/build-kueue.sh; its RayJob integration on):

- **baseline**: N head-only RayJobs (head 1 CPU, KubeRay's default submitter) created
  at once in a namespace with no queue: create to the head pod created by rayscale;
- **kueue**: the same N RayJobs labelled ``kueue.x-k8s.io/queue-name`` in a namespace
  whose LocalQueue's ClusterQueue has room for all of them: Kueue's webhook suspends
  each on create, makes its Workload, admits it and unsuspends the RayJob; then our
  operator makes its cluster. Timed: admissions per second (N / first create to the
  last admission), admission (Workload first seen admitted) to the head pod created,
  and create to the head pod, beside the baseline's.

Times are taken from watches in this process (first seen), not from object
timestamps (whole seconds). Everything started is stopped, also on Ctrl-C.

    PYTHONPATH=src .venv/bin/python bench/queue_admission.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Pod

from rayscale.devcluster import DevCluster, binaries, kueue_build
from rayscale.devcluster.kueue import QUEUE_LABEL, ClusterQueue, DevKueue, KueueProc
from rayscale.vnode.config import Pool, VNodeConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/operator_scale.py and the test helpers, run as a script
from bench.operator_scale import (  # noqa: E402
    Interrupted,
    Operator,
    _on_sigterm,
    say,
    stop_started,
)
from tests.devtools import VNodeProcess, start_vnode, wait_for  # noqa: E402
from tests.k8s.operator.test_rayjob import small_job  # noqa: E402

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
ResourceFlavor = create_global_resource("kueue.x-k8s.io", "v1beta2", "ResourceFlavor",
                                        "resourceflavors")
LocalQueue = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "LocalQueue",
                                        "localqueues")
Workload = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")
CRDS = ROOT / "deploy" / "crds"
FAKE_RUN_NOTE = ("fake-run virtual node: pods are reported Running and no process or Ray "
                 "starts; the figures are the control plane's, Kueue's and rayscale's")


def rayjob(name: str, queue: str | None) -> dict[str, Any]:
    job = small_job(name, 'python -c "print(1)"', shutdownAfterJobFinishes=True)
    cluster = job["spec"]["rayClusterSpec"]
    cluster.pop("workerGroupSpecs")
    labels = {"rayscale.io/bench": "queue-admission"}
    if queue:
        labels[QUEUE_LABEL] = queue
    job["metadata"]["labels"] = labels
    return job


class FirstSeen:
    """A watch in a thread: when each key (``key(obj)``, None to skip) was first seen
    with ``ready(obj)`` true."""

    def __init__(self, kubeconfig: Path, res: Any, ns: str,
                 key: Callable[[Any], str | None], ready: Callable[[Any], bool]) -> None:
        self.client = Client(KubeConfig.from_file(kubeconfig), trust_env=False)
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()
        listed = self.client.list(res, namespace=ns)
        for _ in listed:
            pass
        self.key, self.ready = key, ready
        self.thread = threading.Thread(target=self._run,
                                       args=(res, ns, listed.resourceVersion), daemon=True)
        self.thread.start()

    def _run(self, res: Any, ns: str, rv: str) -> None:
        with contextlib.suppress(Exception):
            for kind, obj in self.client.watch(res, namespace=ns, resource_version=rv):
                now = time.monotonic()
                k = self.key(obj)
                if kind != "DELETED" and k and self.ready(obj):
                    with self.lock:
                        self.times.setdefault(k, now)

    def seen(self) -> dict[str, float]:
        with self.lock:
            return dict(self.times)


def head_pod_job(pod: Any) -> str | None:
    labels = (pod.metadata.labels or {}) if pod.metadata else {}
    if labels.get("ray.io/node-type") != "head":
        return None
    cluster = labels.get("ray.io/cluster") or ""
    return cluster.rsplit("-", 1)[0] or None  # the RayJob's cluster: <job>-<5 chars>


def workload_job(wl: Any) -> str | None:
    owners = wl["metadata"].get("ownerReferences") or []
    return next((o["name"] for o in owners if o["kind"] == "RayJob"), None)


def admitted(wl: Any) -> bool:
    conds = (wl.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Admitted" and c["status"] == "True" for c in conds)


@dataclass
class Batch:
    mode: str
    jobs: int
    created: dict[str, float] = field(default_factory=dict)
    admitted: dict[str, float] = field(default_factory=dict)
    unsuspended: dict[str, float] = field(default_factory=dict)  # suspend: false seen
    head_pod: dict[str, float] = field(default_factory=dict)
    timed_out: bool = False

    def create_to_pod(self) -> list[float]:
        return [self.head_pod[j] - t for j, t in self.created.items() if j in self.head_pod]

    def admission_to_pod(self) -> list[float]:
        return [self.head_pod[j] - t for j, t in self.admitted.items() if j in self.head_pod]

    def admission_to_unsuspend(self) -> list[float]:
        return [self.unsuspended[j] - t for j, t in self.admitted.items()
                if j in self.unsuspended]

    def unsuspend_to_pod(self) -> list[float]:
        return [self.head_pod[j] - t for j, t in self.unsuspended.items()
                if j in self.head_pod]

    def admissions_per_s(self) -> float | None:
        if len(self.admitted) < self.jobs:
            return None
        span = max(self.admitted.values()) - min(self.created.values())
        return self.jobs / span if span > 0 else None

    def all_pods_s(self) -> float | None:
        if len(self.head_pod) < self.jobs:
            return None
        return max(self.head_pod.values()) - min(self.created.values())


def run_batch(kube: Client, kubeconfig: Path, ns: str, mode: str, n: int, queue: str | None,
              timeout_s: float) -> Batch:
    batch = Batch(mode, n)
    pods = FirstSeen(kubeconfig, Pod, ns, head_pod_job, lambda _: True)
    wls = FirstSeen(kubeconfig, Workload, ns, workload_job, admitted) if queue else None
    # a queued RayJob comes back from Kueue's webhook suspended: when each is let go
    jobs = FirstSeen(kubeconfig, RayJob, ns, lambda j: str(j["metadata"]["name"]),
                     lambda j: not j["spec"].get("suspend")) if queue else None
    names = [f"{mode}-{i:03d}" for i in range(n)]

    def create(name: str) -> None:
        kube.create(RayJob.from_dict(rayjob(name, queue)), namespace=ns)
        batch.created[name] = time.monotonic()  # the create call returned

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
    deadline = time.monotonic() + timeout_s
    while len(pods.seen()) < n:
        if time.monotonic() > deadline:
            batch.timed_out = True
            break
        time.sleep(0.2)
    batch.head_pod = pods.seen()
    if wls is not None and jobs is not None:
        batch.admitted = wls.seen()
        batch.unsuspended = jobs.seen()
    # the next batch starts on an idle operator: this one's jobs (Running on dead
    # fake-run dashboards, polled) deleted and collected first
    for name in names:
        with contextlib.suppress(ApiError):
            kube.delete(RayJob, name, namespace=ns)

    def collected() -> bool:
        if list(kube.list(RayJob, namespace=ns)) or list(kube.list(RayCluster, namespace=ns)):
            return False
        return not list(kube.list(Pod, namespace=ns))

    wait_for(collected, timeout_s, f"the RayJobs of {ns} and their clusters collected")
    return batch


def quantiles(values: list[float]) -> tuple[float, float, float, float] | None:
    """min, median, p95, max."""
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return ordered[0], statistics.median(ordered), p95, ordered[-1]


def fmt(q: tuple[float, float, float, float] | None) -> str:
    return "-" if q is None else " / ".join(f"{v:.2f}" for v in q)


def table(base: Batch, queued: Batch, kueue_version: str) -> str:
    rate = queued.admissions_per_s()
    base_pod = quantiles(base.create_to_pod())
    kq_pod = quantiles(queued.create_to_pod())
    ratio = (f"{kq_pod[1] / base_pod[1]:.1f}x" if base_pod and kq_pod and base_pod[1] > 0
             else "-")
    all_base, all_kq = base.all_pods_s(), queued.all_pods_s()
    lines = [
        f"{base.jobs} head-only RayJobs created at once; {FAKE_RUN_NOTE}; Kueue "
        f"{kueue_version}. Seconds: min / median / p95 / max.",
        "",
        "| | no Kueue | through Kueue | ratio |",
        "|---|---|---|---|",
        f"| admissions per second (first create to last admission) | - | "
        f"{'-' if rate is None else f'{rate:.1f}'} | - |",
        f"| admission to head pod created | - | {fmt(quantiles(queued.admission_to_pod()))}"
        " | - |",
        f"| of which admission to the RayJob unsuspended (Kueue) | - | "
        f"{fmt(quantiles(queued.admission_to_unsuspend()))} | - |",
        f"| of which unsuspended to head pod created (rayscale) | - | "
        f"{fmt(quantiles(queued.unsuspend_to_pod()))} | - |",
        f"| create to head pod created | {fmt(base_pod)} | {fmt(kq_pod)} | {ratio} (median) |",
        f"| first create to the last head pod | "
        f"{'-' if all_base is None else f'{all_base:.2f}'} | "
        f"{'-' if all_kq is None else f'{all_kq:.2f}'} | "
        + (f"{all_kq / all_base:.1f}x" if all_base and all_kq else "-") + " |",
    ]
    if base.timed_out or queued.timed_out:
        lines.append(f"TIMED OUT: head pods {len(base.head_pod)}/{base.jobs} (no Kueue), "
                     f"{len(queued.head_pod)}/{queued.jobs} (Kueue)")
    return "\n".join(lines)


def install_crds(kube: Client) -> None:
    """The RayCluster and RayJob CRDs as a user installs them (deploy/crds)."""
    for kind in ("rayclusters", "rayjobs"):
        doc = yaml.safe_load((CRDS / f"ray.io_{kind}.yaml").read_text())
        kube.apply(codecs.from_dict(doc), field_manager="rayscale-bench", force=True)
        name = doc["metadata"]["name"]

        def established(n: str = name) -> bool:
            crd = kube.get(CustomResourceDefinition, n)
            conds = (crd.status.conditions if crd.status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for(established, 30, f"the CRD {name} established")


@contextlib.contextmanager
def queue_setup(kube: Client, ns: str, n: int) -> Iterator[str]:
    """A ResourceFlavor, a ClusterQueue with room for all ``n`` jobs and a LocalQueue."""
    flavor, cq = f"rf-{ns}", f"cq-{ns}"
    kube.create(ResourceFlavor.from_dict({"metadata": {"name": flavor}, "spec": {}}))
    kube.create(ClusterQueue.from_dict({"metadata": {"name": cq}, "spec": {
        "namespaceSelector": {},
        "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
            "name": flavor, "resources": [{"name": "cpu", "nominalQuota": str(2 * n)},
                                          {"name": "memory", "nominalQuota": f"{2 * n}Gi"}],
        }]}]}}))
    kube.create(LocalQueue.from_dict({"metadata": {"name": "lq", "namespace": ns},
                                      "spec": {"clusterQueue": cq}}), namespace=ns)

    def active() -> bool:
        conds = (kube.get(ClusterQueue, cq).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Active" and c["status"] == "True" for c in conds)

    wait_for(active, 60, f"ClusterQueue {cq} Active")
    yield "lq"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=50, help="RayJobs per batch (default 50)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per batch for every head pod (default 300)")
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not kueue_build.built():
        say(f"Kueue is not built: run scripts/build-kueue.sh ({kueue_build.cannot_build()})")
        return 2
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="rayscale-queue-bench-"))
    state.mkdir(parents=True, exist_ok=True)
    say(f"NOTE: {FAKE_RUN_NOTE}")
    say(f"state and logs in {state}")
    cluster: DevCluster | None = None
    vnode: VNodeProcess | None = None
    operator: Operator | None = None
    kube: Client | None = None
    running_kueue: DevKueue | None = None
    kueue_proc: KueueProc | None = None
    ok = False
    result: tuple[Batch, Batch] | None = None
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        bins = binaries.ensure_built(state / "build-k8s.log")
        cluster = DevCluster(state / "controlplane", name="rayscale-qbench", bin_dir=bins)
        say("starting the dev control plane")
        cluster.start(timeout_s=180)
        kube = cluster.client(timeout_s=30)
        install_crds(kube)
        config = VNodeConfig(name=f"qb{uuid.uuid4().hex[:4]}", fake_run=True,
                             pod_cidr=f"127.{random.randint(240, 249)}.0.0/16",
                             pools=[Pool(name="big", count=2, capacity={
                                 "cpu": "512", "memory": "2Ti", "pods": "1000"})])
        vnode = start_vnode(cluster.kubeconfig, state / "vnode", config)
        operator = Operator(cluster.kubeconfig, state / "operator.log")
        operator.start()
        say("starting Kueue")
        running_kueue = DevKueue(cluster, binary=kueue_build.binary())
        kueue_proc = running_kueue.start(kube, None, time.monotonic() + 180)
        for ns in ("plain", "queued"):
            kube.create(Namespace.from_dict({"metadata": {"name": ns}}))  # type: ignore
        say(f"no Kueue: {args.jobs} RayJobs")
        base = run_batch(kube, cluster.kubeconfig, "plain", "plain", args.jobs, None,
                         args.timeout)
        with queue_setup(kube, "queued", args.jobs) as lq:
            say(f"through Kueue: {args.jobs} RayJobs")
            queued = run_batch(kube, cluster.kubeconfig, "queued", "queued", args.jobs, lq,
                               args.timeout)
        result = (base, queued)
        ok = not (base.timed_out or queued.timed_out)
    except (KeyboardInterrupt, Interrupted) as exc:
        say(f"interrupted ({str(exc) or 'Ctrl-C'}); cleaning up")
    finally:
        if running_kueue is not None:
            with contextlib.suppress(ApiError, OSError):
                say("stopping Kueue")
                running_kueue.stop(kube, kueue_proc)
        stop_started(kube, operator, vnode, cluster, previous_int, previous_term)
        if ok and args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        else:
            say(f"state and logs kept in {state}")
    if result is not None:
        print(table(*result, kueue_build.pinned_version() or "?"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
