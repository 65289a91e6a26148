"""The virtual node against the real scheduler: Nodes, pods as processes, taints, DNS names."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import time
import uuid
from pathlib import Path
from typing import cast

from lightkube import ApiError, Client
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod, Service

from rayscale import procs
from rayscale.devcluster import DevCluster
from rayscale.vnode.config import Pool, VNodeConfig
from tests.devtools import VNodeProcess, start_vnode, wait_for
from tests.k8s.helpers import PY, events_for, main_pid, pod_body, pod_log, wait_phase


def _node_of(kube: Client, name: str, namespace: str) -> str:
    pod = kube.get(Pod, name, namespace=namespace)
    assert pod.spec is not None and pod.spec.nodeName
    return pod.spec.nodeName


def test_nodes_registered_with_pools(kube: Client, vnode: VNodeProcess) -> None:
    prefix = vnode.config.name
    for name in vnode.node_names():
        node = kube.get(Node, name)
        assert node.status is not None and node.metadata is not None
        labels = node.metadata.labels or {}
        assert labels["rayscale.io/vnode"] == prefix
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready and ready[0].status == "True"
        lease = kube.get(Lease, name, namespace="kube-node-lease")
        assert lease.spec is not None and lease.spec.holderIdentity == name
        if name.startswith(f"{prefix}-regular-"):
            assert (node.status.capacity or {})["cpu"] == "4"
            assert (node.status.capacity or {})["memory"] == "8Gi"
            assert not (node.spec and node.spec.taints)
        else:
            assert labels["type"] == "virtual-kubelet"
            assert node.spec is not None and node.spec.taints
            t = node.spec.taints[0]
            assert (t.key, t.value, t.effect) == (
                "virtual-kubelet.io/provider", "rayscale", "NoSchedule")


def test_pod_runs_reports_and_stops_on_delete(kube: Client, vnode: VNodeProcess,
                                              namespace: str) -> None:
    script = (
        "import json, os, signal, sys, time\n"
        "keys = ['POD_IP', 'POD_NAME', 'POD_NS', 'CPU_LIMIT', 'MEM_MI', 'GREETING']\n"
        "print(json.dumps({k: os.environ.get(k) for k in keys}), flush=True)\n"
        "print('PATH0', os.environ['PATH'].split(':')[0], flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True),"
        " sys.exit(0)))\n"
        "time.sleep(3600)\n"
    )
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {
            "resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
    ]
    kube.create(pod_body("sleeper", namespace, [PY, "-c", script], cpu="1", memory="128Mi",
                         env=env))
    pod = wait_phase(kube, "sleeper", namespace, {"Running"})
    assert pod.status is not None and pod.status.podIP
    ip = ipaddress.ip_address(pod.status.podIP)
    assert ip in ipaddress.ip_network(vnode.config.pod_cidr) and str(ip) != "127.0.0.1"
    assert _node_of(kube, "sleeper", namespace).startswith(f"{vnode.config.name}-regular-")
    cs = pod.status.containerStatuses or []
    assert cs and cs[0].ready and cs[0].state is not None and cs[0].state.running is not None
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    pid = main_pid(pod)
    assert procs.is_alive(pid)

    out = wait_for(lambda: pod_log(vnode, pod).strip(), 20, "container output")
    seen = json.loads(out.splitlines()[0])
    assert seen == {"POD_IP": str(ip), "POD_NAME": "sleeper", "POD_NS": namespace,
                    "CPU_LIMIT": "1", "MEM_MI": "128", "GREETING": "hello sleeper"}
    assert f"PATH0 {PY.rsplit('/', 1)[0]}" in out

    kube.delete(Pod, "sleeper", namespace=namespace)
    wait_for(lambda: not procs.is_alive(pid), 20, "container process stopped")

    def gone() -> bool:
        try:
            kube.get(Pod, "sleeper", namespace=namespace)
        except ApiError as e:
            return e.status.code == 404
        return False

    wait_for(gone, 30, "pod object removed by the vnode")
    assert "got SIGTERM" in pod_log(vnode, pod)


def test_grace_period_then_sigkill(kube: Client, vnode: VNodeProcess, namespace: str) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)"
    kube.create(pod_body("stubborn", namespace, [PY, "-c", script], grace_s=2))
    pod = wait_phase(kube, "stubborn", namespace, {"Running"})
    pid = main_pid(pod)
    kube.delete(Pod, "stubborn", namespace=namespace)
    wait_for(lambda: procs.is_alive(pid) is False, 20, "SIGKILL after the grace period")


def test_too_big_pod_stays_pending_with_event(kube: Client, vnode: VNodeProcess,
                                             namespace: str) -> None:
    kube.create(pod_body("huge", namespace, [PY, "-c", "pass"], cpu="100",
                         tolerate_elastic=True))

    def failed_scheduling() -> bool:
        return any(e.reason == "FailedScheduling" for e in events_for(kube, namespace, "huge"))

    wait_for(failed_scheduling, 60, "FailedScheduling event")
    pod = kube.get(Pod, "huge", namespace=namespace)
    assert pod.status is not None and pod.status.phase == "Pending"
    assert pod.spec is not None and not pod.spec.nodeName


def test_tainted_pool_only_takes_tolerating_pods(kube: Client, vnode: VNodeProcess,
                                                namespace: str) -> None:
    elastic = f"{vnode.config.name}-elastic-0"
    # 6 CPU fits no regular node (4 CPU) and the elastic one is tainted: Pending
    kube.create(pod_body("big-intolerant", namespace, [PY, "-c", "import time; time.sleep(600)"],
                         cpu="6"))
    # the same pod tolerating the taint lands on the elastic node
    kube.create(pod_body("big-tolerant", namespace, [PY, "-c", "import time; time.sleep(600)"],
                         cpu="6", tolerate_elastic=True))
    # small pods without toleration: never on the elastic node
    for i in range(4):
        kube.create(pod_body(f"small-{i}", namespace,
                             [PY, "-c", "import time; time.sleep(600)"], cpu="500m"))
    wait_phase(kube, "big-tolerant", namespace, {"Running"})
    assert _node_of(kube, "big-tolerant", namespace) == elastic
    for i in range(4):
        wait_phase(kube, f"small-{i}", namespace, {"Running"})
        assert _node_of(kube, f"small-{i}", namespace) != elastic
    wait_for(lambda: any(e.reason == "FailedScheduling"
                         for e in events_for(kube, namespace, "big-intolerant")),
             60, "FailedScheduling for the intolerant pod")
    pod = kube.get(Pod, "big-intolerant", namespace=namespace)
    assert pod.status is not None and pod.status.phase == "Pending"


def test_restart_policies(kube: Client, vnode: VNodeProcess, namespace: str) -> None:
    kube.create(pod_body("ok", namespace, ["sh", "-c", "echo done"]))
    kube.create(pod_body("fails", namespace, ["sh", "-c", "exit 3"]))
    kube.create(pod_body("retries", namespace, ["sh", "-c", "exit 4"],
                         restart_policy="OnFailure"))
    ok = wait_phase(kube, "ok", namespace, {"Succeeded"})
    assert ok.status is not None and ok.status.containerStatuses
    term = ok.status.containerStatuses[0].state
    assert term is not None and term.terminated is not None and term.terminated.exitCode == 0
    assert pod_log(vnode, ok).strip() == "done"

    failed = wait_phase(kube, "fails", namespace, {"Failed"})
    assert failed.status is not None and failed.status.containerStatuses
    term = failed.status.containerStatuses[0].state
    assert term is not None and term.terminated is not None and term.terminated.exitCode == 3

    def restarted() -> Pod | None:
        pod = kube.get(Pod, "retries", namespace=namespace)
        statuses = (pod.status.containerStatuses or []) if pod.status else []
        return pod if statuses and statuses[0].restartCount >= 2 else None

    pod = wait_for(restarted, 30, "OnFailure restarts")
    assert pod.status is not None and pod.status.phase in ("Running", "Pending")
    last = pod.status.containerStatuses[0].lastState if pod.status.containerStatuses else None
    assert last is not None and last.terminated is not None and last.terminated.exitCode == 4


def test_headless_service_names_resolve_in_pods(kube: Client, vnode: VNodeProcess,
                                               namespace: str) -> None:
    kube.create(pod_body("backend", namespace, [PY, "-c", "import time; time.sleep(600)"],
                         labels={"app": "backend"}))
    kube.create(cast(Service, Service.from_dict({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "backend-svc", "namespace": namespace},
        "spec": {"clusterIP": "None", "selector": {"app": "backend"},
                 "ports": [{"name": "x", "port": 1234}]},
    })))
    backend = wait_phase(kube, "backend", namespace, {"Running"})
    assert backend.status is not None
    names = [f"backend-svc.{namespace}.svc.cluster.local", f"backend-svc.{namespace}.svc",
             "backend-svc"]
    script = (
        "import socket, sys, time\n"
        f"names = {names!r}\n"
        "deadline = time.time() + 30\n"
        "while True:\n"
        "    try:\n"
        "        print(' '.join(socket.gethostbyname(n) for n in names), flush=True)\n"
        "        break\n"
        "    except OSError as e:\n"
        "        if time.time() > deadline: raise\n"
        "        time.sleep(0.2)\n"
        "print('host', socket.gethostname(), flush=True)\n"
    )
    kube.create(pod_body("client", namespace, [PY, "-c", script]))
    client = wait_phase(kube, "client", namespace, {"Succeeded", "Failed"}, timeout_s=60)
    out = pod_log(vnode, client)
    assert client.status is not None and client.status.phase == "Succeeded", out
    ip = backend.status.podIP
    assert out.splitlines()[0] == f"{ip} {ip} {ip}", out
    assert "host client" in out


def test_fake_run_reports_running_without_processes(kube: Client, dev_cluster: DevCluster,
                                                   tmp_path: Path, namespace: str) -> None:
    cfg = VNodeConfig(name=f"fake{uuid.uuid4().hex[:4]}", fake_run=True,
                      pod_cidr=f"127.{random.randint(251, 254)}.{random.randint(0, 255)}.0/24",
                      pools=[Pool(name="bench", count=1, capacity={"cpu": "1000",
                                                                   "memory": "4000Gi"},
                                  labels={"bench": "yes"})])
    fake = start_vnode(dev_cluster.kubeconfig, tmp_path / "fake", cfg)
    time.sleep(1)  # let the scheduler's cache see the new node (under load it lags)
    try:
        for i in range(5):
            kube.create(pod_body(f"bench-{i}", namespace, ["/does/not/exist"],
                                 node_selector={"bench": "yes"}))
        for i in range(5):
            pod = wait_phase(kube, f"bench-{i}", namespace, {"Running"}, timeout_s=120)
            assert pod.status is not None and pod.status.podIP
            cs = pod.status.containerStatuses or []
            assert cs and cs[0].ready and (cs[0].containerID or "").startswith("rayscale://fake/")
        assert fake.leftover_processes() == []
        # an image the vnode does not run: not Running in fake-run either
        kube.create(pod_body("bench-nginx", namespace, ["true"], node_selector={"bench": "yes"},
                             container={"image": "nginx"}))

        def pulling() -> bool:
            status = kube.get(Pod, "bench-nginx", namespace=namespace).status
            cs = (status.containerStatuses or []) if status is not None else []
            return bool(cs and cs[0].state and cs[0].state.waiting
                        and cs[0].state.waiting.reason == "ErrImagePull")

        wait_for(pulling, 60, "the nginx pod in ErrImagePull")
        kube.delete(Pod, "bench-0", namespace=namespace)

        def gone() -> bool:
            return all(p.metadata is None or p.metadata.name != "bench-0"
                       for p in kube.list(Pod, namespace=namespace))

        wait_for(gone, 20, "fake pod finalized")
    finally:
        for name in [*(f"bench-{i}" for i in range(5)), "bench-nginx"]:
            with contextlib.suppress(ApiError):
                kube.delete(Pod, name, namespace=namespace, grace_period=0)
        assert fake.stop() == []


def test_login_shell_finds_the_venv_ray(kube: Client, vnode: VNodeProcess,
                                        namespace: str) -> None:
    """KubeRay runs `/bin/bash -lc -- "ulimit ...; ray start ..."`: ray must stay on PATH."""
    kube.create(pod_body("login", namespace, ["/bin/bash", "-lc", "--"],
                         container={"args": ["ulimit -n 65536; command -v ray; echo home=$HOME"]}))
    pod = wait_phase(kube, "login", namespace, {"Succeeded", "Failed"})
    out = pod_log(vnode, pod)
    assert pod.status is not None and pod.status.phase == "Succeeded", out
    # (ulimit may be refused here; as in KubeRay's command, that is not fatal)
    assert f"{PY.rsplit('/', 1)[0]}/ray" in out.splitlines(), out
    assert "home=/" in out and "/home" in out
