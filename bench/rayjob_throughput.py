"""Benchmark: how many small RayJobs the rayscale operator takes through per minute.

Each RayJob is KubeRay's ``ray-job.sample.yaml`` cut down the way the RayJob
tests cut it (``small_job`` in tests/k8s/operator/test_rayjob.py: head only,
no runtime env, no ConfigMap volume), with the entrypoint ``python -c
"print(1)"`` and, in phase A, one worker (``replicas: 1``, 200m CPU). Each job
has its own RayCluster, as a RayJob without ``clusterSelector`` does.

It starts, on loopback and in a temporary state directory, and stops again:

* a dev control plane (etcd, kube-apiserver, kube-scheduler,
  kube-controller-manager from ``~/.cache/rayscale/k8s/bin``, built if
  missing; docs/dev-cluster.md);
* the RayCluster and RayJob CRDs and the operator (``python -m
  rayscale.cli.main operator --shared-pod-network``);
* a virtual node: **fake-run for phase A** (pods reported Running, no
  process started, **so no Ray runs**), a real one for phase B.

**Phase A (fake-run; ``--sizes``, default 10,50,100).** No Ray runs, so no
dashboard answers and no job can reach ``Complete``. The furthest a RayJob
gets is ``jobDeploymentStatus: Running``: its RayCluster created and ready
(head and worker pods Running), the submitter Job created; the operator then
polls a dashboard that refuses the connection. For each N, in a fresh
namespace: N RayJobs created from ``--threads`` threads; timed until every one
is ``Running`` *and* every pod (head, worker, submitter: 3 per job) is
Running. Reported: the time, **jobs per minute** (N / that time), each job's
own create-to-Running latency (median, max), the operator's CPU seconds per
job (utime + stime from ``/proc``) and its Kubernetes API requests per job
(its ``rayscale_operator_api_requests_total``, watches excluded). Then for
``--settle`` s with every job ``Running`` and polling its dead dashboard: the
operator's CPU and requests per job and minute. Then all RayJobs deleted and
timed until the garbage collector has removed every RayJob, RayCluster,
submitter Job and pod.

**Phase B (real Ray; ``--real N``, off by default).** The fake-run vnode is
stopped and a real one started on the same control plane: each pod is a
local process, the head runs ``ray start``, the submitter runs ``ray job
submit``. N head-only RayJobs (``--real-workers`` to add 1-CPU workers) are
timed from create to ``Complete`` (and their deletion, as above).

A warm-up job (not in the figures) runs first in each phase: it takes the
operator's first imports (Ray's job client) and the garbage collector's
discovery of the new kinds.

    .venv/bin/python bench/rayjob_throughput.py                       # A: 10, 50, 100
    .venv/bin/python bench/rayjob_throughput.py --sizes 10 --real 2   # A: 10, then B: 2
    .venv/bin/python bench/rayjob_throughput.py --sizes none --real 2 # B only

Progress goes to stderr, the report to stdout. Everything started is stopped
by PID / process group (the control plane by its own ``stop``) in a
``finally``, also on Ctrl-C and SIGTERM; the state directory (logs) is removed
after a successful run unless ``--keep-state``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Pod

from rayscale.api.crd import crd as generate_crd
from rayscale.devcluster import DevCluster, binaries
from rayscale.vnode.config import Pool, VNodeConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/operator_scale.py and the test helpers, run as a script
from bench.operator_scale import (  # noqa: E402
    ClusterWatch,
    Interrupted,
    Operator,
    Scrape,
    _diff,
    _fmt,
    _on_sigterm,
    cpu_all,
    delete_namespace,
    say,
    stop_started,
)
from tests.devtools import VNodeProcess, start_vnode, wait_for  # noqa: E402
from tests.k8s.operator.test_rayjob import small_job  # noqa: E402

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
RAYCLUSTER_CRD = ROOT / "deploy" / "crds" / "ray.io_rayclusters.yaml"
ENTRYPOINT = 'python -c "print(1)"'
FAKE_RUN_NOTE = ("phase A runs on the fake-run virtual node: pods are reported Running, no "
                 "process and no Ray is started, so no job can reach Complete; its figures "
                 "stop at jobDeploymentStatus Running (cluster ready, submitter Job created, "
                 "every pod Running)")
REAL_NOTE = ("phase B runs on the real virtual node: every pod is a local process, the head "
             "runs ray start and the submitter ray job submit, so a job reaches Complete "
             "through Ray")
KUBERAY_NOTE = ("KubeRay's published figure (benchmark/perf-tests/10000-rayjob, KubeRay "
                "v1.1.1 on GKE, real PyTorch MNIST and Ray Data jobs): 10,000 RayJobs "
                "created in about 110 s, all complete 5,735 s (96 min) later, about 100 "
                "jobs/min; different hardware, workloads and end point, not a same-run ratio")


# ------------------------------------------------------------------ inputs


def rayjob(name: str, workers: int, worker_cpu: str = "200m") -> dict[str, Any]:
    """``small_job`` with ``workers`` workers (the sample's group: 200m CPU requested)."""
    job = small_job(name, ENTRYPOINT)
    job["metadata"]["labels"] = {"rayscale.io/bench": "rayjob-throughput"}
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group.update(replicas=workers, minReplicas=workers, maxReplicas=max(workers, 1))
    container = group["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"cpu": "1"}, "requests": {"cpu": worker_cpu}}
    return job


def parse_sizes(text: str) -> list[int]:
    if text.strip().lower() in ("", "none", "0"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad sizes {text!r}: expected e.g. 10,50,100"
                                         ) from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be >= 1")
    return sizes


# ----------------------------------------------------------------- results


@dataclass
class BatchResult:
    phase: str  # "A fake-run" or "B real Ray"
    jobs: int
    workers_per_job: int
    target: str  # the jobDeploymentStatus timed to: Running (fake-run) or Complete
    pods_expected: int = 0  # at the target (fake-run: head + workers + submitter per job)
    create_s: float = 0.0  # all create calls returned
    reached: int = 0  # jobs at the target
    all_s: float | None = None  # first create to every job at the target (and pods Running)
    jobs_per_min: float | None = None
    last_job_s: float | None = None  # first create to the last job at the target
    last_pod_s: float | None = None  # first create to the last pod Running (fake-run)
    per_job_median_s: float | None = None  # each job's own create -> target
    per_job_max_s: float | None = None
    # the medians of each job's own steps, from its create call: the RayJob controller
    # took it (Initializing), its RayCluster ready (head and workers Running), submitted
    # (jobDeploymentStatus Running: the submitter Job created)
    initializing_median_s: float | None = None
    cluster_ready_median_s: float | None = None
    running_median_s: float | None = None
    pods_running: int = 0
    failed: list[str] = field(default_factory=list)  # jobs that ended Failed, with reasons
    timed_out: bool = False
    operator_cpu_s: float | None = None  # first create to all at the target
    operator_cpu_per_job_s: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)  # every process, same window
    requests: dict[str, float] = field(default_factory=dict)  # operator's, by verb resource
    requests_per_job: float | None = None
    reconciles: int = 0  # RayCluster reconciles (the RayJob controller has no counter)
    # with every job at the target, for --settle s (fake-run: polling a dead dashboard)
    settle_s: float = 0.0
    idle_cpu_pct: float | None = None  # operator, % of one core
    idle_requests_per_job_min: float | None = None
    idle_requests: dict[str, float] = field(default_factory=dict)  # by verb resource
    # deleting every RayJob until RayJobs, RayClusters, Jobs and pods are gone
    delete_s: float | None = None
    delete_operator_cpu_s: float | None = None
    delete_requests: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    notes: list[str] = field(default_factory=list)
    kuberay: str = KUBERAY_NOTE
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d"))
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    python: str = field(default_factory=platform.python_version)
    kubernetes: str = ""
    control_plane_start_s: float = 0.0
    warmups: dict[str, float | None] = field(default_factory=dict)  # phase -> create to target
    batches: list[BatchResult] = field(default_factory=list)
    load_average_start: list[float] = field(default_factory=lambda: list(os.getloadavg()))
    load_average: list[float] = field(default_factory=list)


# ----------------------------------------------------------------- helpers


def install_crds(kube: Client) -> None:
    """The RayCluster CRD (deploy/crds) and the RayJob CRD (generated from the models)."""
    for doc in (yaml.safe_load(RAYCLUSTER_CRD.read_text()), generate_crd("RayJob")):
        try:
            kube.create(codecs.from_dict(doc))
        except ApiError as exc:
            if exc.status.code != 409:
                raise

    def established(name: str) -> bool:
        crd = kube.get(CustomResourceDefinition, name)
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in ("rayclusters.ray.io", "rayjobs.ray.io"):
        wait_for(functools.partial(established, name), 30,
                 f"the CRD {name} to be established")


class JobWatch:
    """A watch of one namespace's RayJobs in a thread: when each first showed each
    jobDeploymentStatus, and why a failed one failed."""

    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.client = Client(KubeConfig.from_file(kubeconfig), trust_env=False)
        self.seen: dict[str, dict[str, float]] = {}  # name -> status -> monotonic time
        self.failed: dict[str, str] = {}
        self.lock = threading.Lock()
        listed = self.client.list(RayJob, namespace=ns)
        for _ in listed:  # empty (a new namespace): for its resourceVersion
            pass
        self.thread = threading.Thread(target=self._run, args=(ns, listed.resourceVersion),
                                       daemon=True)
        self.thread.start()

    def _run(self, ns: str, rv: str) -> None:
        with contextlib.suppress(Exception):
            for _, obj in self.client.watch(RayJob, namespace=ns, resource_version=rv):
                status = obj.get("status") or {}
                name = obj["metadata"]["name"]
                ds = status.get("jobDeploymentStatus") or ""
                now = time.monotonic()
                with self.lock:
                    self.seen.setdefault(name, {}).setdefault(ds, now)
                    if ds in ("Failed", "ValidationFailed"):
                        self.failed[name] = (f"{ds}: {status.get('reason')}: "
                                             f"{status.get('message')}")

    def at(self, status: str) -> dict[str, float]:
        with self.lock:
            return {name: seen[status] for name, seen in self.seen.items() if status in seen}

    def failures(self) -> dict[str, str]:
        with self.lock:
            return dict(self.failed)
    # finished watch threads are left blocked, not closed under (see operator_scale.PodWatch)


class PodWatch:
    """A watch of one namespace's pods: the ones Running now (not deleted)."""

    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.client = Client(KubeConfig.from_file(kubeconfig), trust_env=False)
        self.running: set[str] = set()
        self.first_running: dict[str, float] = {}  # name -> when first seen Running
        self.lock = threading.Lock()
        listed = self.client.list(Pod, namespace=ns)
        for _ in listed:
            pass
        self.thread = threading.Thread(target=self._run, args=(ns, listed.resourceVersion),
                                       daemon=True)
        self.thread.start()

    def _run(self, ns: str, rv: str) -> None:
        with contextlib.suppress(Exception):
            for kind, pod in self.client.watch(Pod, namespace=ns, resource_version=rv):
                if pod.metadata is None or pod.metadata.name is None:
                    continue
                up = (kind != "DELETED" and pod.status is not None
                      and pod.status.phase == "Running" and not pod.metadata.deletionTimestamp)
                with self.lock:
                    if up:
                        self.running.add(pod.metadata.name)
                        self.first_running.setdefault(pod.metadata.name, time.monotonic())
                    else:
                        self.running.discard(pod.metadata.name)

    def count(self) -> int:
        with self.lock:
            return len(self.running)

    def last_running(self) -> float | None:
        with self.lock:
            return max(self.first_running.values(), default=None)


def leftovers(kube: Client, ns: str) -> dict[str, int]:
    """What is still there of the namespace's RayJobs: RayJobs, RayClusters, Jobs, pods."""
    out = {"rayjobs": len(list(kube.list(RayJob, namespace=ns))),
           "rayclusters": len(list(kube.list(RayCluster, namespace=ns))),
           "jobs": len(list(kube.list(Job, namespace=ns))),
           "pods": len(list(kube.list(Pod, namespace=ns)))}
    return {k: v for k, v in out.items() if v}


def _requests(scrape: Scrape | None) -> dict[str, float] | None:
    return scrape.api_requests if scrape is not None else None


# ------------------------------------------------------------- one batch


def run_batch(kube: Client, kubeconfig: Path, operator: Operator, pids: dict[str, int],
              n: int, workers: int, phase: str, target: str, tag: str, threads: int,
              timeout_s: float, settle_s: float, worker_cpu: str = "200m") -> BatchResult:
    fake = target == "Running"
    per_job_pods = (1 + workers + 1) if fake else 0  # head, workers, submitter
    result = BatchResult(phase=phase, jobs=n, workers_per_job=workers, target=target,
                         pods_expected=n * per_job_pods)
    ns = f"rjbench-{tag}-{uuid.uuid4().hex[:4]}"
    kube.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": ns}})))
    names = [f"job-{i:04d}" for i in range(n)]
    say(f"{phase} {n}: creating {n} RayJob(s) ({workers} worker(s) each) in {ns}, "
        f"until {target}" + (" and every pod Running" if fake else ""))
    jobs = JobWatch(kubeconfig, ns)
    clusters = ClusterWatch(kubeconfig, ns)
    pods = PodWatch(kubeconfig, ns) if fake else None
    created_at: dict[str, float] = {}
    before, cpu_before = operator.scrape(), cpu_all(pids)
    t0 = time.monotonic()

    def create(name: str) -> None:
        created_at[name] = time.monotonic()
        kube.create(RayJob.from_dict(rayjob(name, workers, worker_cpu)), namespace=ns)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(create, names))
    result.create_s = time.monotonic() - t0
    deadline, last_progress = t0 + timeout_s, 0.0
    while True:
        now = time.monotonic()
        done = jobs.at(target)
        failed = jobs.failures()
        running_pods = pods.count() if pods is not None else 0
        if len(done) + len(failed) >= n and running_pods >= result.pods_expected:
            break
        if now > deadline:
            result.timed_out = True
            say(f"{phase} {n}: timed out after {timeout_s:.0f} s: {len(done)}/{n} {target}, "
                f"{running_pods}/{result.pods_expected} pods Running")
            break
        if not operator.alive():
            raise RuntimeError(operator.exit_message())
        if now - last_progress >= 10.0:
            last_progress = now
            say(f"{phase} {n}: {now - t0:6.1f} s  {target} {len(done)}/{n}, Initializing "
                f"{len(jobs.at('Initializing'))}, Running {len(jobs.at('Running'))}"
                + (f", pods Running {running_pods}/{result.pods_expected}" if fake else "")
                + (f", failed {len(failed)}" if failed else ""))
        time.sleep(0.1)
    after, cpu_after = operator.scrape(), cpu_all(pids)
    done = jobs.at(target)
    result.reached = len(done)
    result.failed = [f"{k}: {v}" for k, v in sorted(jobs.failures().items())]
    result.pods_running = pods.count() if pods is not None else 0
    if not result.timed_out and result.reached == n:
        last = max(done.values())
        result.last_job_s = last - t0
        if pods is not None:  # the last pod Running may come after the last job's status
            last_pod = pods.last_running()
            if last_pod is not None:
                result.last_pod_s = last_pod - t0
                last = max(last, last_pod)
        result.all_s = last - t0
        result.jobs_per_min = 60.0 * n / result.all_s
    latencies = [at - created_at[name] for name, at in done.items() if name in created_at]
    if latencies:
        result.per_job_median_s = statistics.median(latencies)
        result.per_job_max_s = max(latencies)
    def median_since_create(at: dict[str, float]) -> float | None:
        steps = [when - created_at[name] for name, when in at.items() if name in created_at]
        return statistics.median(steps) if steps else None

    result.initializing_median_s = median_since_create(jobs.at("Initializing"))
    result.running_median_s = median_since_create(jobs.at("Running"))
    ready, _ = clusters.snapshot()  # cluster <job>-<5 random> -> when first ready
    result.cluster_ready_median_s = median_since_create(
        {name.rsplit("-", 1)[0]: when for name, when in ready.items()})
    result.cpu_s = {k: cpu_after[k] - cpu_before[k] for k in cpu_after if k in cpu_before}
    result.operator_cpu_s = result.cpu_s.get("operator")
    if result.operator_cpu_s is not None:
        result.operator_cpu_per_job_s = result.operator_cpu_s / n
    result.requests = _diff(_requests(after), _requests(before))
    result.requests_per_job = sum(result.requests.values()) / n
    if after is not None and before is not None:
        result.reconciles = int(after.reconciles - before.reconciles)
    say(f"{phase} {n}: {result.reached}/{n} {target} in {_fmt(result.all_s, unit=' s')} "
        f"({_fmt(result.jobs_per_min, unit=' jobs/min')}); operator "
        f"{_fmt(result.operator_cpu_per_job_s, '.3f', ' CPU s')} and "
        f"{_fmt(result.requests_per_job, '.1f')} API requests per job")
    if settle_s > 0 and not result.timed_out and fake:
        idle_before, idle_cpu = operator.scrape(), cpu_all(pids)
        t_idle = time.monotonic()
        time.sleep(settle_s)
        idle_after, idle_cpu_after = operator.scrape(), cpu_all(pids)
        span = time.monotonic() - t_idle
        result.settle_s = span
        if "operator" in idle_cpu and "operator" in idle_cpu_after:
            result.idle_cpu_pct = 100.0 * (idle_cpu_after["operator"] - idle_cpu["operator"]) / span
        made = _diff(_requests(idle_after), _requests(idle_before))
        result.idle_requests_per_job_min = sum(made.values()) * 60.0 / span / n
        result.idle_requests = made
    delete_jobs(kube, ns, names, operator, pids, threads, timeout_s, result)
    return result


def delete_jobs(kube: Client, ns: str, names: list[str], operator: Operator,
                pids: dict[str, int], threads: int, timeout_s: float,
                result: BatchResult) -> None:
    """Delete every RayJob; time until the garbage collector has removed the RayJobs,
    their RayClusters, submitter Jobs and pods; then delete the namespace."""
    before, cpu_before = operator.scrape(), cpu_all(pids)
    t0 = time.monotonic()

    def delete(name: str) -> None:
        with contextlib.suppress(ApiError):
            kube.delete(RayJob, name, namespace=ns)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(delete, names))
    try:
        wait_for(lambda: not leftovers(kube, ns), timeout_s,
                 f"the RayJobs of {ns} and what they own gone", interval_s=0.5)
        result.delete_s = time.monotonic() - t0
    except TimeoutError as exc:
        say(f"{exc}: left {leftovers(kube, ns)}; deleting the rest directly")
        for pod in kube.list(Pod, namespace=ns):
            if pod.metadata is not None and pod.metadata.name is not None:
                with contextlib.suppress(ApiError):
                    kube.delete(Pod, pod.metadata.name, namespace=ns, grace_period=0)
    after, cpu_after = operator.scrape(), cpu_all(pids)
    if "operator" in cpu_after and "operator" in cpu_before:
        result.delete_operator_cpu_s = cpu_after["operator"] - cpu_before["operator"]
    result.delete_requests = _diff(_requests(after), _requests(before))
    say(f"{result.phase} {result.jobs}: deleted, all gone in "
        f"{_fmt(result.delete_s, unit=' s')}")
    delete_namespace(kube, ns, timeout_s)


# ----------------------------------------------------------------- report


def _verbs(requests: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(requests.items())) or "none"


def table(report: Report) -> str:
    lines = [f"NOTE: {note}." for note in report.notes] + [""]
    header = ("| phase | RayJobs | workers each | until | reached | all there | jobs/min "
              "| per job: create -> until, median / max | operator CPU s per job "
              "| operator API requests per job | all gone after delete |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in report.batches:
        until = r.target + (f" + {r.pods_expected} pods Running" if r.pods_expected else "")
        reached = f"{r.reached}/{r.jobs}" + (f" ({len(r.failed)} failed)" if r.failed else "")
        lines.append(
            f"| {r.phase} | {r.jobs} | {r.workers_per_job} | {until} | {reached}"
            f" | {_fmt(r.all_s, unit=' s') if not r.timed_out else 'timed out'}"
            f" | {_fmt(r.jobs_per_min)}"
            f" | {_fmt(r.per_job_median_s, unit=' s')} / {_fmt(r.per_job_max_s, unit=' s')}"
            f" | {_fmt(r.operator_cpu_per_job_s, '.3f')} | {_fmt(r.requests_per_job, '.1f')}"
            f" | {_fmt(r.delete_s, unit=' s')} |")
    steps = ("| phase | RayJobs | create -> Initializing | -> RayCluster ready | -> Running "
             "(submitter Job created) | -> " + " / ".join(sorted({r.target for r in
                                                                   report.batches}))
             + " | last job there | last pod Running |")
    lines += ["", "Each job's steps, medians from its own create call; then, from the first "
              "create, when the last job reached the end point and the last pod Running:", "",
              steps, "|---|---|---|---|---|---|---|---|"]
    for r in report.batches:
        lines.append(f"| {r.phase} | {r.jobs} | {_fmt(r.initializing_median_s, '.2f', ' s')}"
                     f" | {_fmt(r.cluster_ready_median_s, '.2f', ' s')}"
                     f" | {_fmt(r.running_median_s, '.2f', ' s')}"
                     f" | {_fmt(r.per_job_median_s, '.2f', ' s')}"
                     f" | {_fmt(r.last_job_s, unit=' s')} | {_fmt(r.last_pod_s, unit=' s')} |")
    names = sorted({k for r in report.batches for k in r.cpu_s})
    cpu_header = "| phase | RayJobs | " + " | ".join(names) + " |"
    lines += ["", "CPU seconds from the first create to all there:", "", cpu_header,
              "|" + "---|" * (cpu_header.count("|") - 1)]
    for r in report.batches:
        lines.append(f"| {r.phase} | {r.jobs} | "
                     + " | ".join(_fmt(r.cpu_s.get(k)) for k in names) + " |")
    lines += ["", "The operator's API requests (verb resource: count; watches not counted):"]
    for r in report.batches:
        made = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.requests.items()))
        gone = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.delete_requests.items()))
        lines.append(f"- {r.phase}, {r.jobs} jobs: to all there: {made or 'none'}; "
                     f"while deleting: {gone or 'none'} (operator CPU "
                     f"{_fmt(r.delete_operator_cpu_s, unit=' s')}); RayCluster reconciles "
                     f"{r.reconciles}")
    idle = [r for r in report.batches if r.settle_s]
    if idle:
        lines += ["", "Afterwards, every job Running and polling its dashboard (fake-run: "
                  "nothing listens, each poll is refused):"]
        for r in idle:
            lines.append(f"- {r.jobs} jobs, {r.settle_s:.0f} s: operator "
                         f"{_fmt(r.idle_cpu_pct, '.0f', ' %')} of a core, "
                         f"{_fmt(r.idle_requests_per_job_min, '.2f')} API requests per job "
                         f"per minute ({_verbs(r.idle_requests)})")
    if any(r.failed for r in report.batches):
        lines += ["", "Failed jobs:"] + [f"- {r.phase}: {f}" for r in report.batches
                                         for f in r.failed]
    warm = ", ".join(f"{k} {_fmt(v, unit=' s')}" for k, v in report.warmups.items())
    lines += [
        "",
        f"{report.date}, {report.cores} cores, Python {report.python}, {report.kubernetes}; "
        f"control plane up in {report.control_plane_start_s:.1f} s; warm-up job (not in the "
        f"figures): {warm or '–'}; load average at the start "
        f"{', '.join(f'{x:.1f}' for x in report.load_average_start)}, at the end "
        f"{', '.join(f'{x:.1f}' for x in report.load_average)}.",
        "jobs/min = RayJobs / time from the first create to all at 'until'. Per job: from "
        "its own create call to its status (seen by a watch). All gone: from the first "
        "delete to no RayJob, RayCluster, Job or pod left in the namespace.",
        f"{report.kuberay}.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------- main


def vnode_config(fake: bool, nodes: int, capacity: dict[str, str]) -> VNodeConfig:
    block = (f"127.{random.randint(240, 249)}.0.0/16" if fake
             else f"127.{random.randint(240, 249)}.{random.randint(0, 255)}.0/24")
    return VNodeConfig(name=f"rjb{'f' if fake else 'r'}{uuid.uuid4().hex[:4]}",
                       fake_run=fake, pod_cidr=block,
                       pools=[Pool(name="big", count=nodes, capacity=capacity)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10,50,100"),
                        help="phase A (fake-run): RayJob counts, comma-separated (default "
                        "10,50,100; 'none': skip phase A)")
    parser.add_argument("--workers", type=int, default=1,
                        help="phase A: workers per RayJob's cluster (default 1)")
    parser.add_argument("--real", type=int, default=0,
                        help="phase B: this many RayJobs on real Ray, create to Complete "
                        "(default 0: skip)")
    parser.add_argument("--real-workers", type=int, default=0,
                        help="phase B: 1-CPU workers per cluster (default 0: head only)")
    parser.add_argument("--threads", type=int, default=8,
                        help="threads creating and deleting the RayJobs (default 8)")
    parser.add_argument("--nodes", type=int, default=4,
                        help="phase A: fake-run Nodes of 512 CPU / 2 TiB / 1,000 pods "
                        "(default 4)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per batch to reach the end point, and to clean up "
                        "(default 600)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="phase A: seconds to watch the operator with every job Running "
                        "(default 10; 0: skip)")
    parser.add_argument("--operator-pythonpath", default=None,
                        help="PYTHONPATH of the operator process only (e.g. another checkout's "
                        "src, to compare versions on the same terms)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the control plane, vnode and operator keep files and logs "
                        "(default: a new temporary directory)")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the state directory (logs) after a successful run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.sizes and args.real < 1:
        parser.error("nothing to run: give --sizes, --real, or both")
    if args.sizes and 3 * max(args.sizes) > args.nodes * 1000:
        parser.error(f"{max(args.sizes)} jobs' pods do not fit on {args.nodes} nodes")

    state = args.state_dir or Path(tempfile.mkdtemp(prefix="rayscale-rayjob-bench-"))
    state.mkdir(parents=True, exist_ok=True)
    if args.sizes:
        say(f"NOTE: {FAKE_RUN_NOTE}")
    say(f"state and logs in {state}")
    report = Report(notes=([FAKE_RUN_NOTE] if args.sizes else [])
                    + ([REAL_NOTE] if args.real > 0 else []))
    cluster: DevCluster | None = None
    vnode: VNodeProcess | None = None
    operator: Operator | None = None
    kube: Client | None = None
    ok = False
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        bins = binaries.ensure_built(state / "build-k8s.log")
        cluster = DevCluster(state / "controlplane", name="rayscale-rjbench", bin_dir=bins)
        say("starting the dev control plane")
        report.control_plane_start_s = cluster.start(timeout_s=180)
        report.kubernetes = "Kubernetes " + cluster.version().get("gitVersion", "?")
        kube = cluster.client(timeout_s=30)
        install_crds(kube)
        operator = Operator(cluster.kubeconfig, state / "operator.log",
                            args.operator_pythonpath)
        operator.start()
        say(f"operator running (pid {operator.proc.pid if operator.proc else '?'}), "
            f"metrics at {operator.metrics_url}")
        control_plane = cluster.load_state()
        base_pids = {comp: proc.pid for comp, proc in
                     (control_plane.procs.items() if control_plane else [])}
        if operator.proc is not None:
            base_pids["operator"] = operator.proc.pid

        phases: list[tuple[str, bool, list[int], int]] = []
        if args.sizes:
            phases.append(("A fake-run", True, args.sizes, args.workers))
        if args.real > 0:
            phases.append(("B real Ray", False, [args.real], args.real_workers))
        for index, (phase, fake, sizes, workers) in enumerate(phases):
            if vnode is not None:
                say("stopping the fake-run vnode")
                vnode.stop()
                vnode = None
            capacity = ({"cpu": "512", "memory": "2Ti", "pods": "1000"} if fake
                        else {"cpu": "16", "memory": "32Gi", "pods": "110"})
            nodes = args.nodes if fake else 1
            config = vnode_config(fake, nodes, capacity)
            say(f"starting a {'fake-run' if fake else 'real'} vnode: {nodes} node(s) of "
                f"{capacity}")
            vnode = start_vnode(cluster.kubeconfig, state / f"vnode-{index}", config)
            pids = {**base_pids, "vnode": vnode.proc.pid}
            target = "Running" if fake else "Complete"
            worker_cpu = "200m" if fake else "1"
            say(f"{phase}: warm-up, one RayJob (not in the figures)")
            warm = run_batch(kube, cluster.kubeconfig, operator, pids, 1, workers,
                             f"{phase} warm-up", target, f"w{index}", 1, args.timeout, 0.0,
                             worker_cpu)
            report.warmups[phase] = warm.per_job_max_s
            if warm.timed_out or warm.reached < 1:
                raise RuntimeError(f"the warm-up RayJob never reached {target} "
                                   f"({warm.failed or 'no failure seen'}); see {state}")
            for n in sizes:
                report.batches.append(run_batch(
                    kube, cluster.kubeconfig, operator, pids, n, workers, phase, target,
                    f"{index}-{n}", args.threads, args.timeout, args.settle if fake else 0.0,
                    worker_cpu))
        report.load_average = list(os.getloadavg())
        ok = not any(r.timed_out or r.failed for r in report.batches)
    except (KeyboardInterrupt, Interrupted) as exc:
        say(f"interrupted ({str(exc) or 'Ctrl-C'}); cleaning up")
    finally:
        stop_started(kube, operator, vnode, cluster, previous_int, previous_term)
        if ok and not args.keep_state and args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        elif report.batches or not ok:
            say(f"state and logs kept in {state}")

    if report.batches:
        if args.json:
            print(json.dumps(asdict(report), indent=2))
        else:
            print(table(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
