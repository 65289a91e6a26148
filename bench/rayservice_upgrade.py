"""Benchmark: requests served and failed while a RayService upgrades to a new cluster.

It starts, on loopback and in a state directory of its own, a dev control
plane, the CRDs of ``deploy/crds``, a real virtual node (pods are local
processes) and the operator (``--shared-pod-network``), as the other
Kubernetes benches do (``bench/operator_scale.py``: ``Operator``,
``stop_started``). In a new namespace it creates the RayService of
``tests/k8s/operator/test_rayservice.py``: a head of 1 CPU running Ray Serve
with the two-deployment app of ``rayservice_app/rs_app.py`` (from a ConfigMap;
``Front`` calls ``Greeter`` through a handle and answers which cluster served),
a worker group of 0 replicas, rayscale's autoscaler sidecar in the head
(``examples/rayservice.yaml``), ``rayClusterDeletionDelaySeconds`` = ``--delay``.

Traffic is sent the way a client behind the serve Service would send it
(``tests/k8s/operator/serve_traffic.py``: the Service's endpoints, resolved
from its selector and the pods' readiness every 0.5 s, since the dev cluster
has no kube-proxy and no EndpointSlices), by ``--threads`` clients:

- ``steady``: ``--steady`` seconds with the service Ready and nothing changing;
- each of ``--upgrades`` upgrades: the load starts, a change to the cluster
  spec (one env var more on the head) is applied, and the load goes on until
  the old cluster is deleted (``--delay`` after the switch) and ``--after``
  seconds more. Measured: the time to the switch (the new cluster active) and
  to the old cluster's deletion, answers and failures, answers per second
  over the whole window and its slowest second, latency percentiles, which
  cluster answered how often.

``--rate R`` offers R requests per second (default 40); ``--rate 0`` is a
closed loop (each client sends its next request when the last is answered:
what the service takes from ``--threads`` clients).

    RAY_USAGE_STATS_ENABLED=0 bash scripts/loopback-only.sh \\
        env PYTHONPATH=$PWD/src .venv/bin/python bench/rayservice_upgrade.py --upgrades 2

Progress goes to stderr, the report to stdout. Everything started is stopped
by PID / process group in a ``finally`` (also on Ctrl-C and SIGTERM); the
state directory is removed after a successful run unless ``--keep-state``.
The exit status is 1 if a request failed or a step timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, Client, codecs
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import ConfigMap, Event, Namespace, Pod
from lightkube.types import PatchType

from rayscale.cli.crd_cmd import DEPLOYED_KINDS, file_name
from rayscale.devcluster import DevCluster, binaries
from rayscale.vnode.config import Pool, VNodeConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers, run as a script
from bench.operator_scale import (  # noqa: E402
    Interrupted,
    Operator,
    _on_sigterm,
    delete_namespace,
    say,
    stop_started,
)
from tests.devtools import VNodeProcess, start_vnode, wait_for  # noqa: E402
from tests.k8s.operator.serve_traffic import Load, Outcome, endpoints  # noqa: E402
from tests.k8s.operator.test_rayservice import (  # noqa: E402
    APP,
    NAME,
    RayService,
    changed_cluster,
    rayservice,
)

CRDS = ROOT / "deploy" / "crds"


@dataclass
class Window:
    """One measured window of traffic."""

    name: str
    offered_rate: float  # requests/s offered (0: closed loop)
    seconds: float = 0.0
    answered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    answers_per_s: float = 0.0
    slowest_second: int | None = None  # fewest answers in one whole second
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_max: float | None = None
    clusters: dict[str, int] = field(default_factory=dict)
    to_pending_s: float | None = None  # the change applied -> a pending cluster named
    to_switch_s: float | None = None  # the change applied -> the new cluster active
    to_old_deleted_s: float | None = None  # the change applied -> the old cluster gone
    #: the change applied -> each step of the new cluster (whole seconds: Events' and
    #: conditions' times): created, head pod Ready, Serve config given, proxy healthy
    #: (its head labelled ray.io/serve=true), Services switched
    steps_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    machine: str = ""
    kubernetes: str = ""
    ray: str = ""
    control_plane_start_s: float = 0.0
    first_ready_s: float = 0.0  # RayService created -> Ready
    windows: list[Window] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)


def summarize(name: str, rate: float, out: Outcome, start_s: float = 0.0) -> Window:
    lat = sorted(out.latencies)

    def pct(p: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    seconds = out.seconds - start_s
    buckets = out.per_second(start_s, out.seconds)
    return Window(
        name=name, offered_rate=rate, seconds=round(seconds, 1), answered=out.ok,
        failed=out.failed, errors=dict(out.errors),
        answers_per_s=round(out.ok / seconds, 1) if seconds > 0 else 0.0,
        slowest_second=min(buckets) if buckets else None,
        latency_ms_p50=pct(0.50), latency_ms_p95=pct(0.95), latency_ms_p99=pct(0.99),
        latency_ms_max=round(1000 * lat[-1], 1) if lat else None,
        clusters=dict(out.clusters))


def install_crds(kube: Client) -> None:
    for kind in DEPLOYED_KINDS:
        doc = yaml.safe_load((CRDS / file_name(kind)).read_text())
        kube.apply(codecs.from_dict(doc), field_manager="rayscale-bench", force=True)
    for kind in DEPLOYED_KINDS:
        name = yaml.safe_load((CRDS / file_name(kind)).read_text())["metadata"]["name"]

        def established(n: str = name) -> bool:
            crd = kube.get(CustomResourceDefinition, n)
            conds = (crd.status.conditions if crd.status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for(established, 60, f"the CRD {name} established")


def status(kube: Client, ns: str) -> dict[str, Any]:
    return dict(kube.get(RayService, NAME, namespace=ns).get("status") or {})


def ready(st: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in st.get("conditions") or [])


def cluster_exists(kube: Client, ns: str, name: str) -> bool:
    from tests.k8s.operator.conftest import RayCluster

    try:
        obj = kube.get(RayCluster, name, namespace=ns)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    return not obj["metadata"].get("deletionTimestamp")


def steps(kube: Client, ns: str, cluster: str, since: float) -> dict[str, float]:
    """When the new cluster went through each step, from the RayService's Events and its
    head pod's Ready condition, in seconds after ``since`` (epoch)."""
    found: dict[str, float] = {}
    wanted = {"CreatedRayCluster": "created", "UpdatedServeApplications": "config given",
              "UpdatedHeadPodServeLabel": "proxy healthy", "UpdatedService": "switched"}
    for event in kube.list(Event, namespace=ns):
        if event.involvedObject.kind != "RayService":
            continue
        # an UpdatedService message names the Service; the others name the cluster
        if event.reason != "UpdatedService" and cluster not in (event.message or ""):
            continue
        step = wanted.get(event.reason or "")
        at = event.firstTimestamp.timestamp() if event.firstTimestamp else None
        if step is None or at is None or at < since - 1:
            continue
        if event.reason == "UpdatedHeadPodServeLabel" and '"true"' not in (event.message or ""):
            continue
        found[step] = min(found.get(step, at), at)
    for pod in kube.list(Pod, namespace=ns, labels={"ray.io/cluster": cluster,
                                                    "ray.io/node-type": "head"}):
        for cond in (pod.status.conditions if pod.status else None) or []:
            if cond.type == "Ready" and cond.status == "True" and cond.lastTransitionTime:
                found["head Ready"] = cond.lastTransitionTime.timestamp()
    order = ["created", "head Ready", "config given", "proxy healthy", "switched"]
    return {k: round(found[k] - since, 0) for k in order if k in found}


def upgrade(kube: Client, ns: str, index: int, args: argparse.Namespace) -> Window:
    """One cluster-spec change under load, until the old cluster is gone."""
    old = status(kube, ns)["activeServiceStatus"]["rayClusterName"]
    load = Load(lambda: endpoints(kube, ns, f"{NAME}-serve-svc"), rate=args.rate,
                max_s=args.timeout, threads=args.threads)
    load.start()
    try:
        time.sleep(args.before)
        changed_at = load.elapsed()
        changed_wall = time.time()
        kube.patch(RayService, NAME, {"spec": {"rayClusterConfig": changed_cluster(
            f"{index}-{uuid.uuid4().hex[:4]}")}}, namespace=ns,  # type: ignore[arg-type]
            patch_type=PatchType.MERGE)
        pending = wait_for(lambda: (status(kube, ns).get("pendingServiceStatus") or {})
                           .get("rayClusterName"), 60, "a pending cluster", interval_s=0.2)
        named_at = load.elapsed()
        say(f"upgrade {index}: {old} -> {pending}")
        wait_for(lambda: status(kube, ns)["activeServiceStatus"].get("rayClusterName")
                 == pending, args.timeout, "the new cluster active", interval_s=0.2)
        switched_at = load.elapsed()
        say(f"upgrade {index}: switched after {switched_at - changed_at:.1f} s")
        wait_for(lambda: not cluster_exists(kube, ns, old), args.timeout,
                 f"the old cluster {old} deleted", interval_s=0.2)
        deleted_at = load.elapsed()
        time.sleep(args.after)
    finally:
        out = load.stop()
    window = summarize(f"upgrade {index}", args.rate, out)
    window.to_pending_s = round(named_at - changed_at, 1)
    window.to_switch_s = round(switched_at - changed_at, 1)
    window.to_old_deleted_s = round(deleted_at - changed_at, 1)
    window.steps_s = steps(kube, ns, pending, changed_wall)
    return window


def table(report: Report, args: argparse.Namespace) -> str:
    lines = [
        f"{report.machine}; {report.kubernetes}; Ray {report.ray}",
        f"control plane up in {report.control_plane_start_s:.1f} s; RayService Ready "
        f"{report.first_ready_s:.1f} s after it was created; offered rate "
        f"{'closed loop' if args.rate <= 0 else f'{args.rate:g}/s'}, {args.threads} clients, "
        f"rayClusterDeletionDelaySeconds {args.delay}",
        "",
        "| window | seconds | answered | failed | answers/s | slowest second | "
        "p50 / p95 / p99 / max ms | to switch | old cluster deleted | clusters |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in report.windows:
        lines.append(
            f"| {w.name} | {w.seconds:.0f} | {w.answered} | {w.failed} | {w.answers_per_s} | "
            f"{w.slowest_second} | {w.latency_ms_p50} / {w.latency_ms_p95} / "
            f"{w.latency_ms_p99} / {w.latency_ms_max} | "
            f"{'' if w.to_switch_s is None else f'{w.to_switch_s} s'} | "
            f"{'' if w.to_old_deleted_s is None else f'{w.to_old_deleted_s} s'} | "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(w.clusters.items()))} |")
    for w in report.windows:
        if w.steps_s:
            lines.append(f"\n{w.name}, the new cluster's steps after the change: "
                         + ", ".join(f"{k} {v:g} s" for k, v in w.steps_s.items()))
    failures = {k: v for w in report.windows for k, v in w.errors.items()}
    if failures:
        lines += ["", f"failures: {failures}"]
    lines += ["", f"load average at the end: {report.load_average}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--upgrades", type=int, default=2, help="cluster upgrades (default 2)")
    parser.add_argument("--rate", type=float, default=40.0,
                        help="requests per second offered (default 40; 0: closed loop)")
    parser.add_argument("--threads", type=int, default=4, help="clients (default 4)")
    parser.add_argument("--steady", type=float, default=20.0,
                        help="seconds of traffic before any upgrade (default 20; 0: skip)")
    parser.add_argument("--delay", type=int, default=10,
                        help="rayClusterDeletionDelaySeconds (default 10; KubeRay's is 60)")
    parser.add_argument("--before", type=float, default=3.0,
                        help="seconds of traffic before each change (default 3)")
    parser.add_argument("--after", type=float, default=3.0,
                        help="seconds of traffic after the old cluster is gone (default 3)")
    parser.add_argument("--timeout", type=float, default=400.0,
                        help="seconds for each step (default 400)")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    state = args.state_dir or Path(tempfile.mkdtemp(prefix="rayscale-rayservice-bench-"))
    state.mkdir(parents=True, exist_ok=True)
    say(f"state and logs in {state}")
    import ray

    report = Report(machine=f"{os.cpu_count()} cores ({platform.machine()}), Python "
                            f"{platform.python_version()}", ray=ray.__version__)
    cluster: DevCluster | None = None
    vnode: VNodeProcess | None = None
    operator: Operator | None = None
    kube: Client | None = None
    ok = False
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        bins = binaries.ensure_built(state / "build-k8s.log")
        cluster = DevCluster(state / "controlplane", name="rayscale-rsbench", bin_dir=bins)
        say("starting the dev control plane")
        report.control_plane_start_s = cluster.start(timeout_s=180)
        report.kubernetes = "Kubernetes " + cluster.version().get("gitVersion", "?")
        kube = cluster.client(timeout_s=30)
        install_crds(kube)
        config = VNodeConfig(
            name=f"rsb{uuid.uuid4().hex[:4]}",
            pod_cidr=f"127.{random.randint(240, 249)}.{random.randint(0, 255)}.0/24",
            pools=[Pool(name="big", count=1,
                        capacity={"cpu": "16", "memory": "32Gi", "pods": "110"})])
        vnode = start_vnode(cluster.kubeconfig, state / "vnode", config)
        operator = Operator(cluster.kubeconfig, state / "operator.log",
                            sidecar_kubeconfig=True)  # the example autoscales
        operator.start()
        ns = f"rsb-{uuid.uuid4().hex[:6]}"
        kube.create(Namespace.from_dict({"metadata": {"name": ns}}))  # type: ignore[arg-type]
        kube.create(ConfigMap.from_dict({  # type: ignore[arg-type]
            "metadata": {"name": "rs-app"}, "data": {"rs_app.py": APP.read_text()}}),
            namespace=ns)
        doc = rayservice()
        doc["spec"]["rayClusterDeletionDelaySeconds"] = args.delay
        created = time.monotonic()
        kube.create(RayService.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
        say("waiting for the RayService to be Ready")
        wait_for(lambda: ready(status(kube, ns)), args.timeout, "the RayService Ready",
                 interval_s=0.5)
        report.first_ready_s = round(time.monotonic() - created, 1)
        warm = Load(lambda: endpoints(kube, ns, f"{NAME}-serve-svc"), rate=10, max_s=5)
        with warm:
            time.sleep(3)  # not in the figures: the first requests warm the proxy up
        if args.steady > 0:
            say(f"steady: {args.steady:g} s")
            load = Load(lambda: endpoints(kube, ns, f"{NAME}-serve-svc"), rate=args.rate,
                        max_s=args.steady, threads=args.threads)
            with load:
                time.sleep(args.steady)
            report.windows.append(summarize("steady", args.rate, load.outcome))
        for index in range(1, args.upgrades + 1):
            report.windows.append(upgrade(kube, ns, index, args))
        report.load_average = [round(x, 2) for x in os.getloadavg()]
        ok = not any(w.failed for w in report.windows)
        delete_namespace(kube, ns, args.timeout)
    except (KeyboardInterrupt, Interrupted) as exc:
        say(f"interrupted ({str(exc) or 'Ctrl-C'}); cleaning up")
    finally:
        stop_started(kube, operator, vnode, cluster, previous_int, previous_term)
        if ok and not args.keep_state and args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        else:
            say(f"state and logs kept in {state}")
    if report.windows:
        print(json.dumps(asdict(report), indent=2) if args.json else table(report, args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
