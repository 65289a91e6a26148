"""Head failover of a busy RayCluster with Redis GCS fault tolerance, on the dev cluster.

The Kubernetes half of ``bench/head_failover.py``. It starts, on loopback and
in a state directory of its own, a dev control plane, a real virtual node (pods
are local processes) and the operator, as the other Kubernetes benches do
(``bench/operator_scale.py``: ``Operator``, ``stop_started``). In a new
namespace it applies KubeRay's ``ray-cluster.external-redis.yaml``
(tests/k8s/operator/kuberay/: a Redis Deployment from the ``redis`` image, run
by the vnode's image map with this machine's redis-server, its password in a
Secret; the RayCluster's GCS keeps its tables there), trimmed to head (0 CPUs)
+ 2 workers of 1 CPU, with ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0`` in the
Ray containers (``NO_DRAIN`` of tests/k8s/operator/conftest.py: a deleted head
pod then exits on SIGTERM instead of draining for the whole grace period).

It keeps the cluster busy:

- the sample's detached actor (``detached_actor.py``: ``counter_actor``,
  1 CPU, so it takes one worker);
- a Ray job whose driver runs on the other worker (``entrypoint_num_cpus``;
  a job's driver without it runs on the head and dies with it) running
  short tasks back to back and appending their times to a file.

Then, each round, the head is lost in one of two ways (``--variants``):

- ``delete``: the head pod is deleted (default grace period); the operator
  creates a new head pod (new name, new address);
- ``kill``: every process of the head container gets SIGKILL (found by the
  vnode's container marker); the head pod's ``restartPolicy`` is ``Always``
  (the operator's, as KubeRay's), so the vnode restarts the container in the
  same pod (same address), as a kubelet does.

Measured from the deletion (or the kill), polled every 0.1 s:

- ``head pod Running``: a new head pod (delete) or the restarted container
  (kill) is Running;
- ``GCS answers``: its GCS answers a client call (GcsClient from this
  process, at the pod's address and the cluster's ``gcs-server`` port);
- ``workers ALIVE``: the new head and both workers ALIVE in the GCS's node
  table (what ``ray status`` lists), each worker with its OLD node id;
- a new driver's job: submitted right after the loss to the dashboard of
  whichever head pod is Running (what a user's ``ray job submit`` to the head
  Service would reach), retried until the job API takes it; its driver (on
  the head) runs one task (``new task``) and increments the detached actor
  (``actor answers``: the count must go on from the one before). Its
  start-up alone (submit to first task) is measured with the head up;
- the busy job: the longest gap between two task results around the loss,
  and whether it went on;
- no worker pod replaced or restarted (same uids, restartCount 0).

The cluster is set up once; rounds run on it one after the other. Prints a
table and the JSON of every round. Run inside the loopback-only namespace::

    RAY_USAGE_STATS_ENABLED=0 bash scripts/loopback-only.sh \\
        env PYTHONPATH=src .venv/bin/python bench/head_failover_k8s.py --rounds 2

Everything started is stopped by PID / process group in a ``finally`` (also on
Ctrl-C and SIGTERM); the state directory is removed after a successful run
unless ``--keep-state``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, Client, codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod

from rayscale import rayauth
from rayscale.devcluster import DevCluster, binaries
from rayscale.vnode.config import Pool, VNodeConfig
from rayscale.vnode.runtime import marked_pids

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/operator_scale.py and the test helpers, run as a script
from bench.operator_scale import (  # noqa: E402
    Interrupted,
    Operator,
    _on_sigterm,
    delete_namespace,
    install_crd,
    say,
    stop_started,
)
from tests.devtools import VNodeProcess, start_vnode, wait_for  # noqa: E402
from tests.k8s.operator.conftest import RayCluster, without_shutdown_drain  # noqa: E402

SAMPLE = ROOT / "tests" / "k8s" / "operator" / "kuberay" / "ray-cluster.external-redis.yaml"
NAME = "raycluster-external-redis"
WORKERS = 2

BUSY_JOB = """
import os, sys, time, ray
# all pods share one network namespace here: Ray's own guess of the node's address (the
# local end of a socket towards the GCS) would be the head pod's; a pod of a real
# cluster guesses its own
ray.init(_node_ip_address=os.environ["POD_IP"])
out, stop = sys.argv[1], sys.argv[2]
with open(out + ".node", "w") as f:
    f.write(ray.get_runtime_context().get_node_id())

@ray.remote(num_cpus=0.25)
def tick():
    time.sleep(0.05)
    return time.time()

while not os.path.exists(stop):
    t = ray.get(tick.remote(), timeout=600)
    with open(out, "a") as f:
        f.write(f"{t}\\n")
"""

NEW_DRIVER = """
import json, sys, time
start = time.time()
import ray
ray.init(namespace="default_namespace")
out = {"start": start, "init": time.time()}

@ray.remote(num_cpus=0.25)
def one():
    return 1

assert ray.get(one.remote(), timeout=600) == 1
out["task"] = time.time()
out["count"] = ray.get(ray.get_actor("counter_actor").increment.remote(), timeout=600)
out["actor"] = time.time()
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def cluster_docs() -> list[dict[str, Any]]:
    """The sample's documents; its RayCluster with 2 workers of 1 CPU and no drain."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "RayCluster":
            doc["spec"]["workerGroupSpecs"][0].update(
                replicas=WORKERS, minReplicas=WORKERS, maxReplicas=WORKERS)
            without_shutdown_drain(doc["spec"])
    return docs


def ray_pods(kube: Client, ns: str, node_type: str) -> list[Pod]:
    return [p for p in kube.list(Pod, namespace=ns, labels={"ray.io/cluster": NAME,
                                                             "ray.io/node-type": node_type})
            if p.metadata and not p.metadata.deletionTimestamp]


def running_head(kube: Client, ns: str, not_name: str | None = None,
                 min_restarts: int = 0) -> Pod | None:
    for pod in ray_pods(kube, ns, "head"):
        assert pod.metadata is not None
        status = pod.status
        if (status is None or status.phase != "Running" or not status.podIP
                or pod.metadata.name == not_name):
            continue
        if not status.containerStatuses:
            continue
        cs = status.containerStatuses[0]
        if cs.state is None or cs.state.running is None:
            continue
        if cs.restartCount < min_restarts:
            continue
        return pod
    return None


def alive(gcs: str) -> dict[str, str] | None:
    """Node IP -> Ray node id of the ALIVE nodes; None while the GCS does not answer."""
    from rayscale.observe.ray_state import RayObserver

    try:
        nodes = RayObserver(gcs).observe().alive()
    except Exception:
        return None
    return {n.ip: n.node_id for n in nodes}


def endpoints(kube: Client, ns: str) -> dict[str, str]:
    def found() -> dict[str, str] | None:
        status = kube.get(RayCluster, NAME, namespace=ns).get("status") or {}
        eps = status.get("endpoints") or {}
        return eps if "gcs-server" in eps and "dashboard" in eps else None

    return wait_for(found, 120, "the gcs-server and dashboard endpoints in status")


def job_client(url: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url)
    client.list_jobs()
    return client


def submit(url: str, entrypoint: str, job_id: str, **kw: Any) -> Any:
    """Submit once under ``job_id`` (a cut-off submit retried never runs twice)."""
    import requests

    client = job_client(url)
    try:
        client.submit_job(entrypoint=entrypoint, submission_id=job_id, **kw)
    except requests.exceptions.ConnectionError:
        return None
    except RuntimeError as exc:
        if "already exists" not in str(exc):
            raise
    return client


def run_job(url: str, entrypoint: str, timeout_s: float = 300, **kw: Any) -> str:
    job_id = f"hf-{uuid.uuid4().hex[:8]}"
    client = wait_for(lambda: submit(url, entrypoint, job_id, **kw), 120, "a job submitted")
    deadline = time.monotonic() + timeout_s
    while not client.get_job_status(job_id).is_terminal():
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} ({entrypoint[:60]}) still running")
        time.sleep(0.5)
    status = client.get_job_status(job_id)
    logs: str = client.get_job_logs(job_id)
    if str(status.value) != "SUCCEEDED":
        raise RuntimeError(f"job {job_id} {status}: {logs[-2000:]}")
    return logs


class NewDriver(threading.Thread):
    """Right after the loss: submit the NEW_DRIVER job to whichever head pod is Running
    (and not ``old``), retrying until the job API takes it; then wait for its result."""

    def __init__(self, kube: Client, ns: str, port: str, out: Path, old: str | None,
                 min_restarts: int) -> None:
        super().__init__(daemon=True)
        self.kube, self.ns, self.port, self.out = kube, ns, port, out
        self.old, self.min_restarts = old, min_restarts
        self.submitted: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        job_id = f"hf-new-{uuid.uuid4().hex[:8]}"
        entry = shlex.join(["python", "-c", NEW_DRIVER, str(self.out)])

        def once() -> Any:
            head = running_head(self.kube, self.ns, self.old, self.min_restarts)
            if head is None or head.status is None:
                return None
            try:
                return submit(f"http://{head.status.podIP}:{self.port}", entry, job_id)
            except Exception:
                return None

        try:
            client = wait_for(once, 600, "the new driver's job submitted", interval_s=0.2)
            self.submitted = time.time()
            deadline = time.monotonic() + 600
            while not self.out.exists() and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    if client.get_job_status(job_id).is_terminal():
                        time.sleep(1)
                        if not self.out.exists():
                            self.error = (f"{client.get_job_status(job_id)}: "
                                          + client.get_job_logs(job_id)[-1500:])
                        return
                time.sleep(0.2)
        except Exception as exc:
            self.error = str(exc)


class PodGone(threading.Thread):
    """When a pod object is gone from the API (polled every 0.2 s)."""

    def __init__(self, kube: Client, ns: str, name: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.ns, self.name = kube, ns, name
        self.gone: float | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                self.kube.get(Pod, self.name, namespace=self.ns)
            except ApiError as exc:
                if exc.status.code == 404:
                    self.gone = time.time()
                    return
            time.sleep(0.2)


def container_pids(uid: str, container: str) -> list[int]:
    return marked_pids({f"{uid}/{container}"})


def ticks(path: Path) -> list[float]:
    return sorted(float(t) for t in path.read_text().split()) if path.exists() else []


def one_round(kube: Client, ns: str, variant: str, eps: dict[str, str], work: Path,
              busy_ticks: Path, count_before: int) -> dict[str, Any]:
    head = running_head(kube, ns)
    assert head is not None and head.metadata is not None and head.status is not None
    old_name, old_uid = head.metadata.name, head.metadata.uid
    assert old_name is not None and old_uid is not None
    restarts = (head.status.containerStatuses or [])[0].restartCount
    gcs_port = eps["gcs-server"]
    old_ip = head.status.podIP or ""
    before = alive(f"{old_ip}:{gcs_port}") or {}
    workers = ray_pods(kube, ns, "worker")
    worker_ips = {p.status.podIP: p.metadata.uid for p in workers
                  if p.status and p.status.podIP and p.metadata}
    worker_ids = {ip: before.get(ip) for ip in worker_ips}
    assert len(worker_ips) == WORKERS and all(worker_ids.values()), (worker_ips, before)
    old_head_id = before.get(old_ip)
    out = work / f"new-driver-{uuid.uuid4().hex[:6]}.json"

    pids = container_pids(old_uid, "ray-head") if variant == "kill" else []
    if variant == "kill" and not pids:
        raise RuntimeError("no process of the head container found")
    lost = time.time()
    if variant == "delete":
        kube.delete(Pod, old_name, namespace=ns)
    else:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    not_name = old_name if variant == "delete" else None
    min_restarts = restarts + 1 if variant == "kill" else 0
    driver = NewDriver(kube, ns, eps["dashboard"], out, not_name, min_restarts)
    driver.start()
    old_gone = PodGone(kube, ns, old_name)
    if variant == "delete":
        old_gone.start()

    def new_head() -> Pod | None:
        return running_head(kube, ns, not_name, min_restarts)

    pod = wait_for(new_head, 300, "the head pod Running again", interval_s=0.1)
    pod_running = time.time()
    assert pod.status is not None
    new_ip = pod.status.podIP or ""
    gcs = f"{new_ip}:{gcs_port}"
    wait_for(lambda: alive(gcs) is not None, 300, "the new GCS", interval_s=0.1)
    gcs_up = time.time()

    def all_back() -> bool:
        now = alive(gcs) or {}
        head_id = now.get(new_ip)
        return (all(now.get(ip) == nid for ip, nid in worker_ids.items())
                and head_id is not None and head_id != old_head_id)

    wait_for(all_back, 300, "the new head and every worker ALIVE with its old id",
             interval_s=0.1)
    back = time.time()
    driver.join(600)
    if variant == "delete":
        old_gone.join(300)
    result: dict[str, Any] = {"variant": variant, "load_average": list(os.getloadavg())}
    if driver.error or not out.exists():
        result["new_driver_error"] = driver.error or "no result"
        say(f"the new driver failed: {result['new_driver_error']}")
        new = None
    else:
        new = json.loads(out.read_text())
    went_on = any(t > back for t in ticks(busy_ticks))
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: len([t for t in ticks(busy_ticks) if t > back]) > 5, 60,
                 "the busy job to go on")
        went_on = True
    times = ticks(busy_ticks)
    gaps = [(b - a, a - lost) for a, b in itertools.pairwise(times) if b > lost - 5]
    gap, gap_at = max(gaps) if gaps else (None, None)
    kept = ray_pods(kube, ns, "worker")
    kept_uids = {p.metadata.uid for p in kept if p.metadata}
    worker_restarts = sum(cs.restartCount for p in kept if p.status
                          for cs in (p.status.containerStatuses or []))
    new_head_restarts = (pod.status.containerStatuses or [])[0].restartCount
    result.update({
        "head_pod_running_s": pod_running - lost,
        "old_head_pod_gone_s": (old_gone.gone - lost) if old_gone.gone else None,
        "head_processes_killed": len(pids),
        "gcs_answers_s": gcs_up - lost,
        "workers_alive_old_ids_s": back - lost,
        "new_driver_submitted_s": (driver.submitted - lost) if driver.submitted else None,
        "new_task_s": (new["task"] - lost) if new else None,
        "actor_answers_s": (new["actor"] - lost) if new else None,
        "counter": f"{count_before} -> {new['count']}" if new else None,
        "counter_kept": bool(new and new["count"] == count_before + 1),
        "busy_job_longest_gap_s": gap,
        "busy_job_longest_gap_from_s": gap_at,  # its start, from the loss
        "busy_job_went_on": went_on,
        "same_head_pod": pod.metadata.uid == old_uid if pod.metadata else None,
        "head_container_restarts": new_head_restarts,
        "worker_pods_kept": kept_uids == set(worker_ips.values()),
        "worker_container_restarts": worker_restarts,
    })
    if not went_on:
        say("the busy job did not go on after the loss")
    return result


def setup_cluster(kube: Client, ns: str) -> None:
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    for doc in cluster_docs():
        kube.create(codecs.from_dict(doc), namespace=ns)  # type: ignore[type-var]
    wait_for(lambda: (kube.get(RayCluster, NAME, namespace=ns).get("status") or {})
             .get("state") == "ready", 300, "the RayCluster ready", interval_s=0.5)


def teardown_cluster(kube: Client, ns: str) -> None:
    with contextlib.suppress(ApiError):
        kube.delete(RayCluster, NAME, namespace=ns)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not list(kube.list(Pod, namespace=ns,
                                            labels={"ray.io/is-ray-node": "yes"})), 120,
                 "the Ray pods gone", interval_s=0.5)
    delete_namespace(kube, ns, 120)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


ROWS = [
    ("head pod Running (delete: a new pod; kill: the container restarted)",
     "head_pod_running_s"),
    ("the old head pod gone from the API (delete)", "old_head_pod_gone_s"),
    ("GCS answers", "gcs_answers_s"),
    ("new head and both workers ALIVE (old node ids), as `ray status` lists them",
     "workers_alive_old_ids_s"),
    ("a new driver's job taken by the new head's job API", "new_driver_submitted_s"),
    ("its first task done", "new_task_s"),
    ("the detached actor answers", "actor_answers_s"),
    ("the detached actor's count", "counter"),
    ("the busy job: longest gap between two task results around the loss",
     "busy_job_longest_gap_s"),
    ("the busy job went on", "busy_job_went_on"),
    ("the head pod", "head_pod"),
    ("worker pods kept (same uids), containers not restarted", "worker_pods_kept"),
    ("load average (1 min) after the round", "load1"),
]


def table(rounds: list[dict[str, Any]], info: dict[str, Any]) -> str:
    head = "| | " + " | ".join(f"{r['variant']} {r['round']}" for r in rounds) + " |"
    lines = [head, "|---|" + "---|" * len(rounds)]
    for label, key in ROWS:
        cells = []
        for r in rounds:
            if key == "load1":
                cells.append(f"{r['load_average'][0]:.1f}")
            elif key == "head_pod":
                cells.append("same, container restarted" if r["same_head_pod"]
                             else "new")
            elif key == "worker_pods_kept":
                cells.append(fmt(r[key] and r["worker_container_restarts"] == 0))
            else:
                cells.append(fmt(r.get(key)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base = info.get("new_driver_baseline") or {}
    lines += ["", "Seconds from the loss. A new driver's job with the head up, submit to its "
              f"first task: {fmt(base.get('submit_to_task_s'))} s. The busy job at the end: "
              f"{info.get('busy_job_status', '?')}. Load average at the start "
              f"{fmt(info['load_average_start'][0])}, at the end "
              f"{fmt((info.get('load_average_end') or [None])[0])}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per variant")
    parser.add_argument("--variants", default="delete,kill",
                        help="comma-separated: delete (the head pod), kill (SIGKILL to the "
                        "head container's processes); default both, alternating")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or any(v not in ("delete", "kill") for v in variants):
        parser.error("--variants: delete, kill or both")

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rayauth.activate(None)  # the sample has no authOptions: its pods run without auth
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="rayscale-hf-k8s-"))
    state.mkdir(parents=True, exist_ok=True)
    say(f"state and logs in {state}; load average {os.getloadavg()}")
    cluster: DevCluster | None = None
    vnode: VNodeProcess | None = None
    operator: Operator | None = None
    kube: Client | None = None
    ns = f"hf-{uuid.uuid4().hex[:6]}"
    rounds: list[dict[str, Any]] = []
    info: dict[str, Any] = {"load_average_start": list(os.getloadavg())}
    ok = False
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        bins = binaries.ensure_built(state / "build-k8s.log")
        cluster = DevCluster(state / "controlplane", name="rayscale-hfbench", bin_dir=bins)
        cluster.start(timeout_s=180)
        kube = cluster.client(timeout_s=30)
        install_crd(kube)
        operator = Operator(cluster.kubeconfig, state / "operator.log")
        operator.start()
        config = VNodeConfig(
            name=f"hf{uuid.uuid4().hex[:4]}",
            pod_cidr=f"127.{random.randint(240, 249)}.{random.randint(0, 255)}.0/24",
            pools=[Pool(name="big", count=1,
                        capacity={"cpu": "8", "memory": "32Gi", "pods": "110"})])
        vnode = start_vnode(cluster.kubeconfig, state / "vnode", config)
        say(f"control plane, operator and vnode up; applying the sample in {ns}")
        t0 = time.monotonic()
        setup_cluster(kube, ns)
        eps = endpoints(kube, ns)
        head = wait_for(lambda: running_head(kube, ns), 120, "the head pod")
        assert head.status is not None
        gcs, url = (f"{head.status.podIP}:{eps['gcs-server']}",
                    f"http://{head.status.podIP}:{eps['dashboard']}")
        wait_for(lambda: len(alive(gcs) or {}) == WORKERS + 1, 300,
                 "head and workers ALIVE in the GCS", interval_s=0.5)
        info["cluster_ready_s"] = time.monotonic() - t0
        say(f"cluster ready in {info['cluster_ready_s']:.0f} s; the detached actor")
        wait_for(lambda: job_client(url), 120, "the head's job API")
        run_job(url, "python /home/ray/samples/detached_actor.py")
        count = int(run_job(url, "python /home/ray/samples/increment_counter.py")
                    .strip().splitlines()[-1])
        # a new driver's start-up with the head up: submit to its first task
        base_out = state / "baseline.json"
        submitted = time.time()
        run_job(url, shlex.join(["python", "-c", NEW_DRIVER, str(base_out)]))
        base = json.loads(base_out.read_text())
        count = base["count"]
        info["new_driver_baseline"] = {"submit_to_task_s": base["task"] - submitted,
                                       "submit_to_actor_s": base["actor"] - submitted}
        say(f"baseline new driver: {info['new_driver_baseline']}")
        busy_ticks, stop = state / "ticks", state / "stop"
        busy_id = f"hf-busy-{uuid.uuid4().hex[:6]}"
        wait_for(lambda: submit(url, shlex.join(["python", "-c", BUSY_JOB, str(busy_ticks),
                                                 str(stop)]), busy_id,
                                entrypoint_num_cpus=0.25), 60, "the busy job submitted")
        wait_for(lambda: len(ticks(busy_ticks)) > 20, 180, "the busy job's tasks",
                 interval_s=0.5)
        busy_node = (state / "ticks.node").read_text()
        info["busy_driver_node"] = busy_node
        say(f"busy job running (driver's node {busy_node[:12]})")
        for i, variant in itertools.product(range(args.rounds), variants):
            time.sleep(5)  # the busy job's ticks before the loss
            say(f"round {i + 1}: {variant}")
            result = one_round(kube, ns, variant, eps, state, busy_ticks, count)
            result["round"] = i + 1
            if result.get("counter"):
                count += 1
            rounds.append(result)
            say(json.dumps(result))
        stop.touch()
        last = wait_for(lambda: running_head(kube, ns), 120, "the head pod")
        assert last.status is not None
        last_url = f"http://{last.status.podIP}:{eps['dashboard']}"
        client = wait_for(lambda: job_client(last_url), 120, "the head's job API")
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: client.get_job_status(busy_id).is_terminal(), 60,
                     "the busy job to end", interval_s=0.5)
        info["busy_job_status"] = str(client.get_job_status(busy_id).value)
        say(f"busy job: {info['busy_job_status']}")
        info["load_average_end"] = list(os.getloadavg())
        ok = True
    except (KeyboardInterrupt, Interrupted) as exc:
        say(f"interrupted ({str(exc) or 'Ctrl-C'}); cleaning up")
    finally:
        if kube is not None:
            try:
                t_down = time.monotonic()
                teardown_cluster(kube, ns)
                say(f"the RayCluster and namespace deleted in {time.monotonic() - t_down:.0f} s")
            except Exception as exc:  # the vnode's stop below stops the pods anyway
                say(f"deleting the RayCluster and namespace: {exc!r}")
        stop_started(kube, operator, vnode, cluster, previous_int, previous_term)
        if ok and not args.keep_state and args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        else:
            say(f"state and logs kept in {state}")
    report = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), **info,
              "rounds": rounds}
    if rounds:
        medians = {}
        for variant in variants:
            mine = [r for r in rounds if r["variant"] == variant]
            medians[variant] = {k: statistics.median(r[k] for r in mine)
                                for k, v in mine[0].items()
                                if k.endswith("_s") and isinstance(v, float)
                                and all(isinstance(r.get(k), float) for r in mine)}
        report["medians"] = medians
        if not args.json:
            print(table(rounds, info))
            print()
        print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
