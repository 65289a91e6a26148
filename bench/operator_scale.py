"""Benchmark: how fast the rayscale operator turns RayClusters into pods.

Starts everything it needs on loopback and stops it again:

* a dev control plane (etcd, kube-apiserver, kube-scheduler,
  kube-controller-manager built from source, see docs/dev-cluster.md) in a
  temporary state directory;
* a virtual node process with ``fake_run: true``: it reports every pod bound
  to its Nodes as Running **without starting any process, so no Ray is
  started**; what is measured is the operator, the API server, the scheduler
  and the vnode's status reporting, not Ray's start-up;
* the RayCluster CRD (deploy/crds/ray.io_rayclusters.yaml) and the operator
  (``python -m rayscale.cli.main operator --shared-pod-network``).

After a warm-up cluster (1 worker, not in the figures: it absorbs the
operator's first watch and the garbage collector's discovery of the new CRD),
for each size ``NxM`` of ``--sizes``:

1. **The raw limit**: in a fresh namespace, the same number of plain pods
   (N x (M + 1), one container with a worker's requests, no owner) created by
   a bare lightkube client from ``--raw-threads`` threads as fast as the API
   server takes them; timed until all creates returned and until a watch has
   seen all of them Running; then deleted.
2. **The operator**: in a fresh namespace, N RayClusters (autoscaling off,
   one worker group with ``replicas: M``, tiny requests), created from as many
   threads as the raw pods; a watch of the
   RayClusters records when each one's ``status.state`` turns ``ready``.
   Reports pods per second (all pods / time to all clusters ready) and its
   ratio to the raw limit's, the time to the first, median and last cluster
   ready, when the operator had created all pods (its
   ``rayscale_operator_pods_created_total``), when the last pod was created
   and reported Running (the pods' own timestamps), the operator's reconciles,
   mean reconcile time and API requests, and the CPU time of every process.
3. **Idle**: for ``--settle`` s with nothing to change, the operator's
   reconciles per second, its API requests per cluster per minute (its own
   count, and the API server's ``apiserver_request_total`` for the kinds an
   operator touches) and each process's CPU.
4. **Pod change to status**: ``--probes`` times, deletes a Running worker
   pod of a ready cluster and times how long until the RayCluster's status
   (watched) shows one worker fewer available, and until it is ready again.

Then it deletes the RayClusters and waits for their pods and namespace to go.
``--operator-pythonpath`` runs another version of the operator (e.g. another
checkout's ``src``) on the same terms, to compare.

    .venv/bin/python bench/operator_scale.py                       # 10x10,50x10,100x10
    .venv/bin/python bench/operator_scale.py --sizes 1x5 --json
    .venv/bin/python bench/operator_scale.py --sizes 40x25 --nodes 8 --timeout 900

Progress goes to stderr, the report to stdout. Everything started is
stopped by PID / process group in a ``finally`` (also on Ctrl-C or SIGTERM);
the state directory (logs) is removed afterwards unless the run failed or
``--keep-state`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import httpx2
import yaml
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.config import client_adapter
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Pod

from rayscale import procs
from rayscale.devcluster import DevCluster, binaries
from rayscale.vnode.config import Pool, VNodeConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers (tests/devtools.py), run as a script too
from tests.devtools import VNodeProcess, start_vnode, wait_for  # noqa: E402

CRD = ROOT / "deploy" / "crds" / "ray.io_rayclusters.yaml"
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
RAY_POD_LABEL = "ray.io/is-ray-node"
RAW_POD_LABEL = "rayscale.io/bench-raw"
# the API server's requests that an operator makes, counted while everything is idle
OPERATOR_RESOURCES = ("rayclusters", "pods", "services", "events", "serviceaccounts",
                      "rolebindings")
FAKE_RUN_NOTE = ("pods are reported Running by the fake-run virtual node: no process and no "
                 "Ray is started in them")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_METRICS_LINE = re.compile(r"operator metrics on (http://[\d.]+:\d+/metrics)")


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Size:
    clusters: int
    workers: int

    @property
    def label(self) -> str:
        return f"{self.clusters}x{self.workers}"

    @property
    def pods(self) -> int:
        return self.clusters * (self.workers + 1)  # a head per cluster


def parse_sizes(text: str) -> list[Size]:
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", part)
        if not match or int(match.group(1)) < 1:
            raise argparse.ArgumentTypeError(
                f"bad size {part!r}: expected NxM (N clusters >= 1, M workers each)")
        sizes.append(Size(int(match.group(1)), int(match.group(2))))
    return sizes


def raycluster(name: str, workers: int) -> dict[str, Any]:
    """A KubeRay-format RayCluster with autoscaling off and tiny requests (they all fit)."""

    def container(name: str, cpu: str, memory: str) -> dict[str, Any]:
        quantity = {"cpu": cpu, "memory": memory}
        return {"name": name, "image": "rayproject/ray:2.60.0",
                "resources": {"requests": quantity, "limits": quantity}}

    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": {"rayscale.io/bench": "operator-scale"}},
        "spec": {
            "rayVersion": "2.60.0",
            "enableInTreeAutoscaling": False,
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0"},
                "template": {"spec": {"containers": [container("ray-head", "100m", "128Mi")]}},
            },
            "workerGroupSpecs": [{
                "groupName": "small",
                "replicas": workers,
                "minReplicas": 0,
                "maxReplicas": max(workers, 1),
                "rayStartParams": {},
                "template": {"spec": {"containers": [container("ray-worker", "10m", "32Mi")]}},
            }],
        },
    }


def raw_pod(name: str) -> dict[str, Any]:
    """A plain pod, like a worker's (same requests, one container), owned by nobody."""
    quantity = {"cpu": "10m", "memory": "32Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {RAW_POD_LABEL: "yes"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0",
                            "command": ["sleep", "infinity"],
                            "resources": {"requests": quantity, "limits": quantity}}],
        },
    }


# ----------------------------------------------------------------- results


@dataclass
class Scrape:
    reconciles: float = 0.0
    errors: float = 0.0
    duration_sum: float = 0.0
    duration_count: float = 0.0
    pods_created: float | None = None  # None: an operator without the metric
    api_requests: dict[str, float] | None = None  # "verb resource" -> count (not watches)


@dataclass
class SizeResult:
    size: str
    clusters: int
    workers_per_cluster: int
    pods_expected: int
    pods_running: int = 0
    pods_total: int = 0  # every Ray pod of the namespace at all-ready (duplicates show here)
    create_s: float = 0.0  # to submit the N RayClusters
    first_ready_s: float | None = None
    median_ready_s: float | None = None
    all_ready_s: float | None = None
    # from the pods' creationTimestamp and last status write (+-0.5 s)
    all_pods_created_s: float | None = None
    all_pods_running_s: float | None = None
    pods_per_s: float | None = None
    reconciles: int = 0
    reconcile_errors: int = 0
    mean_reconcile_ms: float | None = None
    # CPU seconds each process used from the first create to all ready
    cpu_s: dict[str, float] = field(default_factory=dict)
    # after all ready, for --settle seconds: the operator's timers with nothing to change
    idle_reconciles_per_s: float | None = None
    idle_cpu_pct: dict[str, float] = field(default_factory=dict)  # % of one core
    cleanup_s: float | None = None
    ready_clusters: int = 0
    timed_out: bool = False
    # the raw limit: as many plain pods, created by a bare client with --raw-threads threads
    raw_threads: int = 0
    raw_create_s: float | None = None  # all create calls returned
    raw_running_s: float | None = None  # all pods Running (seen by a watch)
    raw_pods_per_s: float | None = None  # pods / raw_running_s
    raw_create_per_s: float | None = None  # pods / raw_create_s
    raw_cpu_s: dict[str, float] = field(default_factory=dict)  # per process, raw phase
    # the operator, on the same terms
    operator_created_s: float | None = None  # its pods_created counter reached all pods
    operator_create_per_s: float | None = None
    ratio: float | None = None  # pods_per_s / raw_pods_per_s
    operator_requests: dict[str, float] = field(default_factory=dict)  # during the scale-up
    create_ratio: float | None = None  # operator_create_per_s / raw_create_per_s
    # idle: API requests (not watches) per cluster per minute
    idle_requests_operator: float | None = None  # counted by the operator itself
    idle_requests_apiserver: float | None = None  # apiserver_request_total, OPERATOR_RESOURCES
    idle_request_detail: dict[str, float] = field(default_factory=dict)  # apiserver, per verb
    # from deleting a Running worker pod to the RayCluster's status showing it
    probes: int = 0
    status_drop_ms: list[float] = field(default_factory=list)  # availableWorkerReplicas M-1
    status_back_ms: list[float] = field(default_factory=list)  # back to M, ready


@dataclass
class Report:
    note: str = FAKE_RUN_NOTE
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d"))
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    python: str = field(default_factory=platform.python_version)
    vnode_nodes: int = 0
    node_capacity: dict[str, str] = field(default_factory=dict)
    control_plane_start_s: float = 0.0
    kubernetes: str = ""
    load_average: list[float] = field(default_factory=list)
    warmup: SizeResult | None = None  # 1 cluster of 1 worker, not in the figures
    sizes: list[SizeResult] = field(default_factory=list)
    pod_processes_alive: int = 0


# ----------------------------------------------------------------- helpers


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def install_crd(kube: Client, path: Path = CRD) -> None:
    obj = codecs.from_dict(yaml.safe_load(path.read_text()))
    try:
        kube.create(obj)
    except ApiError as exc:
        if exc.status.code != 409:
            raise

    def established() -> bool:
        crd = kube.get(CustomResourceDefinition, "rayclusters.ray.io")
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, 30, "the RayCluster CRD to be established")


class Operator:
    """The operator process, in its own session; stopped by its process group."""

    def __init__(self, kubeconfig: Path, log: Path, pythonpath: str | None = None,
                 sidecar_kubeconfig: bool = False) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.pythonpath = pythonpath
        #: give autoscaler sidecars the kubeconfig (on the dev cluster they have no other)
        self.sidecar_kubeconfig = sidecar_kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""

    def start(self, timeout_s: float = 60.0) -> None:
        env = {**os.environ, procs.MARKER: f"rayscale-bench-operator-{uuid.uuid4().hex[:8]}"}
        if self.pythonpath:  # another version of the operator (e.g. to compare with)
            env["PYTHONPATH"] = self.pythonpath
        self.proc = procs.spawn(
            [sys.executable, "-m", "rayscale.cli.main", "operator",
             "--kubeconfig", str(self.kubeconfig), "--shared-pod-network",
             "--metrics-host", "127.0.0.1", "--metrics-port", "0",
             *(["--sidecar-kubeconfig", str(self.kubeconfig)] if self.sidecar_kubeconfig
               else [])],
            env, self.log,
        )
        proc = self.proc

        def url() -> str | None:
            if proc.poll() is not None:
                raise RuntimeError(f"operator exited ({proc.returncode}); see {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            match = _METRICS_LINE.search(self.log.read_text(errors="replace"))
            return match.group(1) if match else None

        self.metrics_url = wait_for(url, timeout_s, "the operator's metrics endpoint")
        wait_for(lambda: self.scrape() is not None, timeout_s, "operator /metrics to answer")

    def scrape(self) -> Scrape | None:
        try:
            with _NO_PROXY.open(self.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        values: dict[str, float] = {}
        requests: dict[str, float] | None = None
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
                if name.startswith("rayscale_operator_api_requests_total{"):
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
                    if labels.get("verb") != "watch":
                        requests = requests if requests is not None else {}
                        key = f"{labels.get('verb')} {labels.get('resource')}"
                        requests[key] = requests.get(key, 0.0) + float(value)
        created = values.get("rayscale_operator_pods_created_total")
        if created is not None and requests is None:
            requests = {}  # the metric exists, nothing counted yet
        return Scrape(
            reconciles=values.get("rayscale_operator_reconciles_total", 0.0),
            errors=values.get("rayscale_operator_errors_total", 0.0),
            duration_sum=values.get("rayscale_operator_reconcile_duration_seconds_sum", 0.0),
            duration_count=values.get("rayscale_operator_reconcile_duration_seconds_count", 0.0),
            pods_created=created,
            api_requests=requests,
        )

    def exit_message(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with status {code}")
        hint = (" (a segmentation fault in a native extension: the kernel log names the "
                "library)" if code == -signal.SIGSEGV else "")
        return f"the operator {how}{hint}; see {self.log}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            procs.stop_group(self.proc.pid, grace_s=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_all(pids: dict[str, int]) -> dict[str, float]:
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    times = os.times()
    out["benchmark (this script)"] = times.user + times.system
    return {name: value for name, value in out.items() if value is not None}


def ray_pods(kube: Client, ns: str) -> list[Pod]:
    return list(kube.list(Pod, namespace=ns, labels={RAY_POD_LABEL: "yes"}))


def running_pods(pods: list[Pod]) -> int:
    return sum(1 for p in pods
               if p.status is not None and p.status.phase == "Running"
               and not (p.metadata and p.metadata.deletionTimestamp))


def poll_clusters(kube: Client, ns: str) -> tuple[set[str], int]:
    """The ready RayClusters, and their Running workers as their status reports them."""
    ready, available = set(), 0
    for obj in kube.list(RayCluster, namespace=ns):
        status = obj.get("status") or {}
        available += int(status.get("availableWorkerReplicas") or 0)
        if status.get("state") == "ready":
            ready.add(obj["metadata"]["name"])
    return ready, available


def pod_times(pods: list[Pod]) -> tuple[float | None, float | None]:
    """When the last pod was created, and when the last pod's status was last written
    (for Running pods: when the vnode reported them Running), as epoch seconds.

    From the objects themselves, so nothing polls pods while the clock runs. Both
    timestamps are truncated to the second (see :func:`within_second`).
    """
    created: list[float] = []
    status_written: list[float] = []
    for pod in pods:
        meta = pod.metadata
        if meta is None:
            continue
        if meta.creationTimestamp is not None:
            created.append(meta.creationTimestamp.timestamp())
        writes = [m.time.timestamp() for m in meta.managedFields or []
                  if m.subresource == "status" and m.time is not None]
        if writes:
            status_written.append(max(writes))
    return (max(created) if created else None,
            max(status_written) if status_written else None)


def within_second(stamp: float, start: float, end: float) -> float:
    """Seconds from ``start`` to an API timestamp truncated to the second: the middle of
    the part of that second that lies between ``start`` and ``end`` (error < 0.5 s)."""
    low, high = max(stamp, start), min(stamp + 1.0, end)
    return (low + max(low, high)) / 2 - start


def _delta(after: Scrape | None, before: Scrape | None, result: SizeResult) -> None:
    if after is None or before is None:
        return
    result.reconciles = int(after.reconciles - before.reconciles)
    result.reconcile_errors = int(after.errors - before.errors)
    count = after.duration_count - before.duration_count
    if count > 0:
        result.mean_reconcile_ms = 1000.0 * (after.duration_sum - before.duration_sum) / count


class ApiServerMetrics:
    """``apiserver_request_total`` from the API server's /metrics (admin identity)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = KubeConfig.from_file(kubeconfig).get()
        assert config is not None, f"no context in {kubeconfig}"
        self.http = client_adapter.Client(config,
                                          client_adapter.ConnectionParams(trust_env=False))

    def requests(self) -> dict[str, float] | None:
        """"VERB resource" -> requests so far, for OPERATOR_RESOURCES, watches left out."""
        try:
            text = self.http.get("/metrics").text
        except httpx2.HTTPError:
            return None
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            name, _, value = line.rpartition(" ")
            labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
            if labels.get("resource") == "events" and labels.get("group"):
                continue  # events.k8s.io: the scheduler's; the operator posts core Events
            if labels.get("resource") in OPERATOR_RESOURCES and labels.get("verb") != "WATCH":
                resource = labels["resource"] + (f"/{labels['subresource']}"
                                                 if labels.get("subresource") else "")
                key = f"{labels.get('verb')} {resource}"
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def close(self) -> None:
        self.http.close()


def _diff(after: dict[str, float] | None, before: dict[str, float] | None) -> dict[str, float]:
    if after is None or before is None:
        return {}
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


class PodWatch:
    """A watch of one namespace's pods in a thread: when each reached Running."""

    def __init__(self, kubeconfig: Path, ns: str, labels: dict[str, Any]) -> None:
        self.client = Client(KubeConfig.from_file(kubeconfig), trust_env=False)
        self.running: dict[str, float] = {}
        self.stop = threading.Event()
        listed = self.client.list(Pod, namespace=ns, labels=labels)
        for _ in listed:  # empty (a new namespace): for its resourceVersion
            pass
        self.thread = threading.Thread(target=self._run, args=(ns, labels,
                                                                listed.resourceVersion),
                                       daemon=True)
        self.thread.start()

    def _run(self, ns: str, labels: dict[str, Any], rv: str) -> None:
        with contextlib.suppress(Exception):
            for _, pod in self.client.watch(Pod, namespace=ns, labels=labels,
                                            resource_version=rv):
                if self.stop.is_set():
                    return
                if (pod.status is not None and pod.status.phase == "Running"
                        and pod.metadata is not None and pod.metadata.name):
                    self.running.setdefault(pod.metadata.name, time.monotonic())

    def close(self) -> None:
        self.stop.set()
        # not client.close(): closing the connection under the thread reading the watch made
        # that thread spin on the closed socket (a core's worth); a daemon, it stays blocked


class ClusterWatch:
    """A watch of one namespace's RayClusters in a thread: when each was first ready, and
    the Running workers their status reports (a watch, not polls, so that measuring
    loads the API server no more than the raw phase's pod watch does)."""

    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.client = Client(KubeConfig.from_file(kubeconfig), trust_env=False)
        self.ready_at: dict[str, float] = {}
        self.available: dict[str, int] = {}
        self.lock = threading.Lock()
        listed = self.client.list(RayCluster, namespace=ns)
        for _ in listed:  # empty (a new namespace): for its resourceVersion
            pass
        self.thread = threading.Thread(target=self._run, args=(ns, listed.resourceVersion),
                                       daemon=True)
        self.thread.start()

    def _run(self, ns: str, rv: str) -> None:
        with contextlib.suppress(Exception):
            for _, obj in self.client.watch(RayCluster, namespace=ns, resource_version=rv):
                status = obj.get("status") or {}
                name = obj["metadata"]["name"]
                with self.lock:
                    self.available[name] = int(status.get("availableWorkerReplicas") or 0)
                    if status.get("state") == "ready":
                        self.ready_at.setdefault(name, time.monotonic())

    def snapshot(self) -> tuple[dict[str, float], int]:
        with self.lock:
            return dict(self.ready_at), sum(self.available.values())

    def close(self) -> None:
        pass  # see PodWatch.close: the reading thread is left blocked, not closed under


def run_raw(kube: Client, kubeconfig: Path, size: Size, tag: str, threads: int,
            timeout_s: float, result: SizeResult, pids: dict[str, int]) -> None:
    """The raw limit: ``size.pods`` plain pods created by ``threads`` threads of one bare
    lightkube client, as fast as the API server takes them, until all are Running."""
    ns = f"bench-{tag}-raw-{size.label.lower()}-{uuid.uuid4().hex[:4]}"
    kube.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": ns}})))
    say(f"{size.label}: raw limit: {size.pods} plain pods from {threads} threads in {ns}")
    watch = PodWatch(kubeconfig, ns, {RAW_POD_LABEL: "yes"})
    names = [f"raw-{i:05d}" for i in range(size.pods)]
    errors: list[Exception] = []

    def create(part: list[str]) -> None:
        try:
            for name in part:
                kube.create(cast(Pod, Pod.from_dict(raw_pod(name))), namespace=ns)
        except Exception as exc:
            errors.append(exc)

    workers = [threading.Thread(target=create, args=(names[i::threads],))
               for i in range(threads)]
    cpu_before = cpu_all(pids)
    t0 = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result.raw_threads = threads
    result.raw_create_s = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"raw pod creates failed: {errors[0]}")
    try:
        wait_for(lambda: len(watch.running) >= size.pods, timeout_s,
                 f"{size.pods} raw pods Running", interval_s=0.05)
        result.raw_running_s = max(watch.running.values()) - t0
        result.raw_pods_per_s = size.pods / result.raw_running_s
        result.raw_create_per_s = size.pods / result.raw_create_s
        cpu_after = cpu_all(pids)
        result.raw_cpu_s = {name: cpu_after[name] - cpu_before[name]
                            for name in cpu_after if name in cpu_before}
    except TimeoutError as exc:
        say(f"{size.label}: raw: {exc}")
    finally:
        watch.close()
    say(f"{size.label}: raw: created in {result.raw_create_s:.1f}s, all Running in "
        f"{_fmt(result.raw_running_s, unit='s')}")
    with contextlib.suppress(ApiError):
        kube.deletecollection(Pod, namespace=ns, grace_period=0)
    wait_for(lambda: not list(kube.list(Pod, namespace=ns)), timeout_s,
             f"the raw pods of {ns} gone", interval_s=0.5)
    delete_namespace(kube, ns, timeout_s)


def probe_latency(kube: Client, kubeconfig: Path, ns: str, names: list[str], workers: int,
                  probes: int, result: SizeResult, timeout_s: float = 15.0) -> None:
    """Delete a Running worker pod of a ready cluster; time until the cluster's status
    shows one worker fewer available, and until it is back to all (the replacement)."""
    if workers < 1:
        return
    # its watch threads are left blocked when done, not closed under (see PodWatch.close)
    watcher = Client(KubeConfig.from_file(kubeconfig), trust_env=False)
    for name in names[:probes]:
        victim = next((p for p in kube.list(Pod, namespace=ns, labels={
            "ray.io/cluster": name, "ray.io/node-type": "worker"})
            if p.status is not None and p.status.phase == "Running"
            and p.metadata is not None and not p.metadata.deletionTimestamp), None)
        if victim is None or victim.metadata is None or victim.metadata.name is None:
            continue
        listed = watcher.list(RayCluster, namespace=ns,
                              fields={"metadata.name": name})
        for _ in listed:
            pass
        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch(rv: str = listed.resourceVersion, name: str = name,
                  seen: dict[str, float] = seen, stop: threading.Event = stop) -> None:
            with contextlib.suppress(Exception):
                for _, obj in watcher.watch(RayCluster, namespace=ns,
                                            fields={"metadata.name": name},
                                            resource_version=rv):
                    status = obj.get("status") or {}
                    available = int(status.get("availableWorkerReplicas") or 0)
                    now = time.monotonic()
                    if available < workers:
                        seen.setdefault("drop", now)
                    elif "drop" in seen and status.get("state") == "ready":
                        seen.setdefault("back", now)
                    if "back" in seen or stop.is_set():
                        return

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(0.2)  # the watch is established
        t0 = time.monotonic()
        kube.delete(Pod, victim.metadata.name, namespace=ns)
        deadline = t0 + timeout_s
        while "back" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        result.probes += 1
        if "drop" in seen:
            result.status_drop_ms.append(1000.0 * (seen["drop"] - t0))
        if "back" in seen:
            result.status_back_ms.append(1000.0 * (seen["back"] - t0))


# -------------------------------------------------------------- one size


def run_size(kube: Client, operator: Operator, size: Size, tag: str, timeout_s: float,
             poll_s: float, settle_s: float, pids: dict[str, int],
             result: SizeResult | None = None, apiserver: ApiServerMetrics | None = None,
             kubeconfig: Path | None = None, probes: int = 0, threads: int = 1) -> SizeResult:
    ns = f"bench-{tag}-{size.label.lower()}-{uuid.uuid4().hex[:4]}"
    result = result or SizeResult(size=size.label, clusters=size.clusters,
                                  workers_per_cluster=size.workers, pods_expected=size.pods)
    kube.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": ns}})))
    names = [f"rc-{i:03d}" for i in range(size.clusters)]
    say(f"{size.label}: creating {size.clusters} RayCluster(s) of 1 head + {size.workers} "
        f"worker(s) in namespace {ns} ({size.pods} pods)")
    # no try/finally here: on an error or an interruption the whole control plane is
    # stopped anyway, so the namespace is only emptied on the way to the next size
    watch = ClusterWatch(kubeconfig, ns) if kubeconfig is not None else None
    before = operator.scrape()
    cpu_before = cpu_all(pids)
    t0, t0_wall = time.monotonic(), time.time()
    # from as many threads as the raw limit's pods: the input arrives as fast for both
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(lambda name: kube.create(
            RayCluster.from_dict(raycluster(name, size.workers)), namespace=ns), names))
    result.create_s = time.monotonic() - t0
    ready_at: dict[str, float] = {}
    last_progress = 0.0
    deadline = t0 + timeout_s
    while len(ready_at) < size.clusters:
        now = time.monotonic()
        if now > deadline:
            result.timed_out = True
            say(f"{size.label}: timed out after {timeout_s:.0f}s with "
                f"{len(ready_at)}/{size.clusters} clusters ready")
            break
        if not operator.alive():
            raise RuntimeError(operator.exit_message())
        if watch is not None:
            seen, available = watch.snapshot()
            ready_at = {name: at - t0 for name, at in seen.items()}
        else:
            ready, available = poll_clusters(kube, ns)
            for name in ready - ready_at.keys():
                ready_at[name] = time.monotonic() - t0
        if (before is not None and before.pods_created is not None
                and result.operator_created_s is None):
            current = operator.scrape()
            if (current is not None and current.pods_created is not None
                    and current.pods_created - before.pods_created >= size.pods):
                result.operator_created_s = time.monotonic() - t0
        if now - last_progress >= 10.0:
            last_progress = now
            say(f"{size.label}: {now - t0:5.1f}s  clusters ready {len(ready_at)}/"
                f"{size.clusters}, workers Running (as the operator saw them) "
                f"{available}/{size.clusters * size.workers}")
        if len(ready_at) < size.clusters:
            time.sleep(poll_s)
    after = operator.scrape()
    cpu_after = cpu_all(pids)
    if watch is not None:
        watch.close()
    result.cpu_s = {name: cpu_after[name] - cpu_before[name]
                    for name in cpu_after if name in cpu_before}
    _delta(after, before, result)
    if (after is not None and before is not None and after.api_requests is not None
            and before.api_requests is not None):
        result.operator_requests = _diff(after.api_requests, before.api_requests)
    pods = ray_pods(kube, ns)
    result.pods_total = sum(1 for p in pods
                            if not (p.metadata and p.metadata.deletionTimestamp))
    result.pods_running = running_pods(pods)
    created, running = pod_times(pods)
    end_wall = time.time()
    if created is not None:
        result.all_pods_created_s = within_second(created, t0_wall, end_wall)
    if running is not None and result.pods_running >= size.pods:
        result.all_pods_running_s = within_second(running, t0_wall, end_wall)
    result.ready_clusters = len(ready_at)
    if ready_at:
        times = sorted(ready_at.values())
        result.first_ready_s = times[0]
        result.median_ready_s = statistics.median(times)
    if not result.timed_out:
        result.all_ready_s = max(ready_at.values())
        result.pods_per_s = size.pods / result.all_ready_s
        if result.raw_pods_per_s:
            result.ratio = result.pods_per_s / result.raw_pods_per_s
    if result.operator_created_s is None and result.all_pods_created_s is not None:
        result.operator_created_s = result.all_pods_created_s  # an operator without the metric
    if result.operator_created_s:
        result.operator_create_per_s = size.pods / result.operator_created_s
        if result.raw_create_per_s:
            result.create_ratio = result.operator_create_per_s / result.raw_create_per_s
    say(f"{size.label}: all ready in {result.all_ready_s or float('nan'):.1f}s, "
        f"{result.pods_running} pods Running, {result.reconciles} reconciles")
    if settle_s > 0:
        time.sleep(2.0)  # the last status writes and their events settle
        api_before = apiserver.requests() if apiserver is not None else None
        idle_before, idle_cpu = operator.scrape(), cpu_all(pids)
        t_idle = time.monotonic()
        time.sleep(settle_s)
        idle_after, idle_cpu_after = operator.scrape(), cpu_all(pids)
        api_after = apiserver.requests() if apiserver is not None else None
        span = time.monotonic() - t_idle
        per_cluster_minute = 60.0 / span / size.clusters
        if idle_before is not None and idle_after is not None:
            result.idle_reconciles_per_s = (idle_after.reconciles
                                            - idle_before.reconciles) / span
            if idle_before.api_requests is not None and idle_after.api_requests is not None:
                made = _diff(idle_after.api_requests, idle_before.api_requests)
                result.idle_requests_operator = sum(made.values()) * per_cluster_minute
        if api_before is not None and api_after is not None:
            result.idle_request_detail = _diff(api_after, api_before)
            result.idle_requests_apiserver = (sum(result.idle_request_detail.values())
                                              * per_cluster_minute)
        result.idle_cpu_pct = {name: 100.0 * (idle_cpu_after[name] - idle_cpu[name]) / span
                               for name in idle_cpu_after if name in idle_cpu}
    if probes > 0 and kubeconfig is not None and not result.timed_out:
        probe_latency(kube, kubeconfig, ns, names, size.workers, probes, result)
        say(f"{size.label}: pod change -> status: drop {_ms(result.status_drop_ms)}, "
            f"back to ready {_ms(result.status_back_ms)} ({result.probes} probes)")
    result.cleanup_s = delete_clusters(kube, ns, timeout_s)
    return result


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    return (f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms"
            if len(values) > 1 else f"{values[0]:.0f} ms")


def delete_clusters(kube: Client, ns: str, timeout_s: float) -> float | None:
    """Delete the namespace's RayClusters, wait for their pods to go, then the namespace."""
    t0 = time.monotonic()
    for obj in kube.list(RayCluster, namespace=ns):
        with contextlib.suppress(ApiError):
            kube.delete(RayCluster, obj["metadata"]["name"], namespace=ns)
    elapsed: float | None = None
    try:
        wait_for(lambda: not ray_pods(kube, ns), timeout_s, f"the Ray pods of {ns} gone",
                 interval_s=0.5)
        elapsed = time.monotonic() - t0
    except TimeoutError as exc:
        say(f"{exc}; deleting what is left directly")
        for pod in ray_pods(kube, ns):
            assert pod.metadata is not None and pod.metadata.name is not None
            with contextlib.suppress(ApiError):
                kube.delete(Pod, pod.metadata.name, namespace=ns, grace_period=0)
    delete_namespace(kube, ns, timeout_s)
    return elapsed


def delete_namespace(kube: Client, ns: str, timeout_s: float) -> None:
    """Delete a namespace and wait until it is gone: the namespace controller's requests
    (a LIST and a DELETE of every kind in it) must not fall into a later idle window."""
    with contextlib.suppress(ApiError):
        kube.delete(Namespace, ns)

    def gone() -> bool:
        try:
            kube.get(Namespace, ns)
        except ApiError as exc:
            if exc.status.code == 404:
                return True
            raise
        return False

    try:
        wait_for(gone, timeout_s, f"namespace {ns} deleted", interval_s=0.5)
    except TimeoutError as exc:
        say(str(exc))


# --------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def table(report: Report) -> str:
    header = ("| size (clusters x workers) | pods Running / expected | pods/s | first ready "
              "| median ready | all ready | all pods created | all pods Running | reconciles "
              "| mean reconcile | cleanup |")
    lines = [f"NOTE: {report.note}.", "", header, "|" + "---|" * (header.count("|") - 1)]
    for r in report.sizes:
        running = f"{r.pods_running} / {r.pods_expected}"
        if r.pods_total > r.pods_running:
            running += f" (+{r.pods_total - r.pods_running} not Running)"
        reconciles = str(r.reconciles) + (f" ({r.reconcile_errors} errors)"
                                          if r.reconcile_errors else "")
        lines.append(
            f"| {r.size} | {running} | {_fmt(r.pods_per_s)} | {_fmt(r.first_ready_s, unit=' s')}"
            f" | {_fmt(r.median_ready_s, unit=' s')}"
            f" | {_fmt(r.all_ready_s, unit=' s') if not r.timed_out else 'timed out'}"
            f" | {_fmt(r.all_pods_created_s, unit=' s')}"
            f" | {_fmt(r.all_pods_running_s, unit=' s')} | {reconciles}"
            f" | {_fmt(r.mean_reconcile_ms, unit=' ms')} | {_fmt(r.cleanup_s, unit=' s')} |")
    if any(r.raw_threads for r in report.sizes):
        raw_header = ("| size | raw: all created | raw: all Running | raw pods/s | operator: "
                      "all created | operator: all ready | operator pods/s | ratio | "
                      "create ratio |")
        lines += ["", "The raw limit: as many plain pods from a bare lightkube client "
                  f"({report.sizes[0].raw_threads} threads), same cluster, same run:", "",
                  raw_header, "|" + "---|" * (raw_header.count("|") - 1)]
        for r in report.sizes:
            lines.append(
                f"| {r.size} | {_fmt(r.raw_create_s, unit=' s')}"
                f" | {_fmt(r.raw_running_s, unit=' s')} | {_fmt(r.raw_pods_per_s)}"
                f" | {_fmt(r.operator_created_s, unit=' s')} | {_fmt(r.all_ready_s, unit=' s')}"
                f" | {_fmt(r.pods_per_s)} | {_fmt(r.ratio, '.2f')}"
                f" | {_fmt(r.create_ratio, '.2f')} |")
    names = sorted({n for r in report.sizes for n in r.cpu_s})
    cpu_header = "| size | " + " | ".join(names) + " |"
    lines += ["", "CPU seconds from the first create to all ready (raw: to all Running; the "
              "raw client is the benchmark itself):", "", cpu_header,
              "|" + "---|" * (cpu_header.count("|") - 1)]
    for r in report.sizes:
        lines.append(f"| {r.size} | " + " | ".join(_fmt(r.cpu_s.get(n)) for n in names) + " |")
        if r.raw_cpu_s:
            lines.append(f"| {r.size} raw | "
                         + " | ".join(_fmt(r.raw_cpu_s.get(n)) for n in names) + " |")
    made = [f"{r.size}: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                      sorted(r.operator_requests.items()))
            for r in report.sizes if r.operator_requests]
    if made:
        lines += ["", "The operator's API requests during the scale-up (verb resource count; "
                  "watches not counted): " + "; ".join(made)]
    if any(r.idle_reconciles_per_s is not None for r in report.sizes):
        idle_header = ("| size | operator reconciles/s | API requests / cluster / min "
                       "(operator's count) | (API server's count) | "
                       + " | ".join(names) + " |")
        lines += ["", "Afterwards, all clusters ready and nothing to change (CPU: % of one core):",
                  "", idle_header, "|" + "---|" * (idle_header.count("|") - 1)]
        for r in report.sizes:
            lines.append(f"| {r.size} | {_fmt(r.idle_reconciles_per_s)}"
                         f" | {_fmt(r.idle_requests_operator, '.2f')}"
                         f" | {_fmt(r.idle_requests_apiserver, '.2f')} | "
                         + " | ".join(_fmt(r.idle_cpu_pct.get(n), '.0f', ' %') for n in names)
                         + " |")
        detail = [f"{r.size}: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                            sorted(r.idle_request_detail.items()))
                  for r in report.sizes if r.idle_request_detail]
        if detail:
            lines += ["", "API server requests while idle (verb resource count): "
                      + "; ".join(detail)]
    if any(r.probes for r in report.sizes):
        lines += ["", "| size | probes | pod deleted -> status shows it | -> status ready again |",
                  "|---|---|---|---|"]
        for r in report.sizes:
            lines.append(f"| {r.size} | {r.probes} | {_ms(r.status_drop_ms)}"
                         f" | {_ms(r.status_back_ms)} |")
    lines += [
        "",
        f"{report.date}, {report.cores} cores, Python {report.python}, {report.kubernetes}; "
        f"control plane up in {report.control_plane_start_s:.1f} s; warm-up cluster ready in "
        f"{_fmt(report.warmup.all_ready_s if report.warmup else None, unit=' s')}, its "
        f"cleanup {_fmt(report.warmup.cleanup_s if report.warmup else None, unit=' s')}; vnode: "
        f"{report.vnode_nodes} nodes of {report.node_capacity}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in report.load_average)}; pod processes alive at the end: "
        f"{report.pod_processes_alive}.",
        "pods/s = (heads + workers) / time from the first create to all clusters ready. "
        "All pods created / Running: from the pods' creationTimestamp and their last status "
        "write (1 s resolution, shown as the middle of the second: +-0.5 s). Raw pods/s = "
        "pods / time from the first create to all Running (seen by a watch); ratio = operator "
        "pods/s / raw pods/s; create ratio = the same for creation alone (the operator's "
        "pods_created counter, else its pods' creationTimestamps).",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------- main


def stop_started(kube: Client | None, operator: Operator | None, vnode: Any,
                 cluster: DevCluster | None, previous_int: Any, previous_term: Any) -> None:
    """Stop what a benchmark started, operator first, control plane last, without a
    second interruption half-way; then restore the SIGINT/SIGTERM handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if kube is not None:
            kube.close()
        if operator is not None:
            say("stopping the operator")
            operator.stop()
        if vnode is not None:
            say("stopping the vnode")
            swept = vnode.stop()
            if swept:
                say(f"swept pod processes {swept}")
        if cluster is not None:
            say("stopping the control plane")
            cluster.stop()
            left = [c for c, alive in cluster.running().items() if alive]
            if left:
                say(f"still running after stop: {left}")
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10x10,50x10,100x10"),
                        help="comma-separated NxM: N RayClusters of M workers (default "
                        "10x10,50x10,100x10)")
    parser.add_argument("--nodes", type=int, default=4, help="virtual Nodes (default 4)")
    parser.add_argument("--node-pods", type=int, default=1000,
                        help="pod capacity of each virtual Node (default 1000)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per size to reach all ready (default 600)")
    parser.add_argument("--poll", type=float, default=0.25,
                        help="seconds between checks of the watched RayClusters (the warm-up "
                        "polls them) (default 0.25)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to watch the idle operator after each size is ready "
                        "(default 10; 0: skip)")
    parser.add_argument("--raw-threads", type=int, default=8,
                        help="threads creating the raw-limit pods (default 8; 0: skip the raw "
                        "limit)")
    parser.add_argument("--probes", type=int, default=5,
                        help="pod-change-to-status probes per size (default 5; 0: skip)")
    parser.add_argument("--operator-pythonpath", default=None,
                        help="PYTHONPATH of the operator process only (e.g. another checkout's "
                        "src, to compare versions on the same run)")
    parser.add_argument("--crd", type=Path, default=CRD,
                        help="the RayCluster CRD to install (default: this checkout's; another "
                        "version of the operator may need its own)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the control plane, vnode and operator keep files and logs "
                        "(default: a new temporary directory)")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the state directory (logs) after a successful run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    need = max(s.pods for s in args.sizes)
    if need > args.nodes * args.node_pods:
        parser.error(f"{need} pods do not fit on {args.nodes} nodes of {args.node_pods} pods")

    state = args.state_dir or Path(tempfile.mkdtemp(prefix="rayscale-operator-bench-"))
    state.mkdir(parents=True, exist_ok=True)
    say(f"NOTE: {FAKE_RUN_NOTE}")
    say(f"state and logs in {state}")
    report = Report()
    capacity = {"cpu": "512", "memory": "2Ti", "pods": str(args.node_pods)}
    report.vnode_nodes, report.node_capacity = args.nodes, capacity

    cluster: DevCluster | None = None
    vnode: VNodeProcess | None = None
    operator: Operator | None = None
    kube: Client | None = None
    apiserver: ApiServerMetrics | None = None
    ok = False
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        bins = binaries.ensure_built(state / "build-k8s.log")
        cluster = DevCluster(state / "controlplane", name="rayscale-bench", bin_dir=bins)
        say("starting the dev control plane")
        report.control_plane_start_s = cluster.start(timeout_s=180)
        report.kubernetes = "Kubernetes " + cluster.version().get("gitVersion", "?")
        kube = cluster.client(timeout_s=30)

        config = VNodeConfig(
            name=f"bench{uuid.uuid4().hex[:4]}",
            fake_run=True,
            pod_cidr=f"127.{random.randint(240, 249)}.0.0/16",
            pools=[Pool(name="big", count=args.nodes, capacity=capacity)],
        )
        say(f"starting a fake-run vnode: {args.nodes} nodes of {capacity}")
        vnode = start_vnode(cluster.kubeconfig, state / "vnode", config)

        install_crd(kube, args.crd)
        apiserver = ApiServerMetrics(cluster.kubeconfig)
        operator = Operator(cluster.kubeconfig, state / "operator.log",
                            args.operator_pythonpath)
        operator.start()
        say(f"operator running (pid {operator.proc.pid if operator.proc else '?'}), "
            f"metrics at {operator.metrics_url}")

        control_plane = cluster.load_state()
        pids = {comp: proc.pid for comp, proc in
                (control_plane.procs.items() if control_plane else [])}
        pids["vnode"] = vnode.proc.pid
        if operator.proc is not None:
            pids["operator"] = operator.proc.pid
        # one small cluster first: the operator's first watch of a just-established CRD
        # waits for the API server's storage, and the garbage collector only deletes
        # RayCluster-owned pods once it has discovered the CRD (up to 30 s): both once
        say("warm-up: one RayCluster of 1 worker (not part of the figures)")
        report.warmup = run_size(kube, operator, Size(1, 1), "warmup", args.timeout,
                                 args.poll, 0.0, pids)
        if report.warmup.timed_out:
            raise RuntimeError("the warm-up RayCluster never became ready; see "
                               f"{operator.log}")
        for index, size in enumerate(args.sizes):
            result = SizeResult(size=size.label, clusters=size.clusters,
                                workers_per_cluster=size.workers, pods_expected=size.pods)
            if args.raw_threads > 0:
                run_raw(kube, cluster.kubeconfig, size, str(index), args.raw_threads,
                        args.timeout, result, pids)
            report.sizes.append(run_size(kube, operator, size, str(index), args.timeout,
                                         args.poll, args.settle, pids, result, apiserver,
                                         cluster.kubeconfig, args.probes,
                                         max(1, args.raw_threads)))
        report.load_average = list(os.getloadavg())
        report.pod_processes_alive = len(vnode.leftover_processes())
        ok = not any(r.timed_out for r in report.sizes)
    except (KeyboardInterrupt, Interrupted) as exc:
        say(f"interrupted ({str(exc) or 'Ctrl-C'}); cleaning up")
    finally:
        if apiserver is not None:
            apiserver.close()
        stop_started(kube, operator, vnode, cluster, previous_int, previous_term)
        if ok and not args.keep_state and args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        elif report.sizes or not ok:
            say(f"state and logs kept in {state}")

    if report.sizes:
        if args.json:
            print(json.dumps(asdict(report), indent=2))
        else:
            print(table(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
