"""The laptop stack: the dev control plane, a virtual node, rayscale's CRDs and operator.

``rayscale dev-cluster up --with-operator`` runs :meth:`DevStack.up`: the
control plane (:class:`DevCluster`, as ``dev-cluster up``), then a vnode
process (``python -m rayscale.vnode``: a ``regular`` pool of two 4-CPU nodes
and one ``elastic`` node labelled and tainted like a serverless
virtual-kubelet node), the CRDs (RayCluster, RayJob, RayService, RayCronJob, generated
from :mod:`rayscale.api`, applied server-side), and the operator process
(``rayscale operator --shared-pod-network --sidecar-kubeconfig``, as the tests
run it). Each part is waited for: the API server ready, the Nodes Ready, the
CRDs established and listable, the operator's ``/metrics`` answering.
``--with-kueue`` adds Kueue's manager (:mod:`rayscale.devcluster.kueue`),
started after the CRDs (its Ray integrations need them) and stopped first.

The vnode and the operator run in sessions of their own; their PIDs, with an
argument only they have, are recorded in ``stack.json`` next to the control
plane's ``state.json``. :meth:`DevStack.down` stops them by those PIDs after
checking each still runs our command line (never by name): the operator
first (so it recreates nothing), then the vnode (which stops its pods'
processes; any left are swept by the vnode's container marker), then the
control plane. ``up`` is idempotent: running parts are kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Node
from pydantic import BaseModel

from rayscale import procs
from rayscale.api.crd import crd
from rayscale.devcluster.cluster import DevCluster
from rayscale.devcluster.kueue import DevKueue, KueueProc, remove_webhooks
from rayscale.ports import free_port

#: the kinds whose CRDs the stack installs (deploy/crds holds the same files)
CRD_KINDS = ("RayCluster", "RayJob", "RayService", "RayCronJob")
#: the vnode's environment marker on every container process (rayscale.vnode.runtime.MARKER;
#: not imported: the vnode is a sibling package, run as a process)
VNODE_CONTAINER_MARKER = "RAYSCALE_VNODE_CONTAINER"
_NO_PROXY = urllib.request.ProxyHandler({})
_FIELD_MANAGER = "rayscale-dev-stack"


class StackProc(BaseModel):
    """A process the stack started: its PID and the arguments only it has."""

    pid: int
    identity: list[str]
    log: str
    port: int | None = None  # the operator's /metrics


class StackState(BaseModel):
    vnode: StackProc | None = None
    operator: StackProc | None = None
    kueue: KueueProc | None = None


def vnode_config(name: str, pod_cidr: str) -> dict[str, Any]:
    """The vnode's pools: ``regular`` (2 x 4 CPU / 8 GiB) and ``elastic``, marked as
    virtual-kubelet nodes are (ACK's ECI virtual node among them): label
    ``type=virtual-kubelet``, taint ``virtual-kubelet.io/provider``."""
    return {
        "name": name,
        "pod_cidr": pod_cidr,
        "pools": [
            {"name": "regular", "count": 2,
             "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
            {"name": "elastic", "count": 1,
             "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
             "labels": {"type": "virtual-kubelet"},
             "taints": [{"key": "virtual-kubelet.io/provider", "value": "rayscale",
                         "effect": "NoSchedule"}]},
        ],
    }


def pod_cidr_for(cluster_name: str) -> str:
    """The ``default`` stack's pods get 127.250.0.0/16 (the vnode's default); another
    name a /24 of its own in 127.249.0.0/16, so two stacks' pods never share an IP."""
    if cluster_name in ("default", "rayscale-default"):
        return "127.250.0.0/16"
    return f"127.249.{zlib.crc32(cluster_name.encode()) % 256}.0/24"


@dataclass
class DevStack:
    """The control plane of ``cluster`` plus a vnode and the operator."""

    cluster: DevCluster
    vnode_name: str = "rayscale"
    pod_cidr: str = "127.250.0.0/16"
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def _state_file(self) -> Path:
        return self.cluster.state_dir / "stack.json"

    @property
    def vnode_dir(self) -> Path:
        return self.cluster.state_dir / "vnode"

    @property
    def node_names(self) -> list[str]:
        return [f"{self.vnode_name}-regular-0", f"{self.vnode_name}-regular-1",
                f"{self.vnode_name}-elastic-0"]

    def load(self) -> StackState:
        try:
            return StackState.model_validate_json(self._state_file.read_text())
        except (OSError, ValueError):
            return StackState()

    def _save(self, state: StackState) -> None:
        if not self.cluster.state_dir.exists():
            return  # `down` of a cluster that never ran: nothing to record
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self._state_file)

    # ------------------------------------------------------------------ status

    @staticmethod
    def _alive(proc: StackProc | None) -> bool:
        """Alive and still ours: every identity argument is on its command line."""
        return proc is not None and procs.runs_with(proc.pid, proc.identity)

    @property
    def kueue(self) -> DevKueue:
        return DevKueue(self.cluster)

    def running(self) -> dict[str, bool]:
        state = self.load()
        return {"vnode": self._alive(state.vnode), "operator": self._alive(state.operator),
                "kueue": DevKueue.alive(state.kueue)}

    def status(self) -> dict[str, str]:
        """Each part in a word or two (for ``dev-cluster status``)."""
        out: dict[str, str] = {}
        ready = self.cluster.ready()
        running = self.running()
        out["vnode"] = "running" if running["vnode"] else "stopped"
        out["operator"] = "running" if running["operator"] else "stopped"
        if running["kueue"]:
            out["kueue"] = "running"
        if ready:
            client = self.cluster.client()
            try:
                nodes = sum(self._node_ready(client, n) for n in self.node_names)
                crds = sum(self._crd_ready(client, k) for k in CRD_KINDS)
            finally:
                client.close()
            out["nodes ready"] = f"{nodes}/{len(self.node_names)}"
            out["crds established"] = f"{crds}/{len(CRD_KINDS)}"
        return out

    # ---------------------------------------------------------------------- up

    def up(self, timeout_s: float = 180.0, log: Callable[[str], None] = lambda _: None,
           with_kueue: bool = False) -> float:
        """Start what is not running and wait for all of it; returns the seconds taken.

        A failure stops what this call started (the control plane only if it
        was not running before). Without ``with_kueue``, a Kueue that runs is kept;
        webhook configurations a Kueue that is gone left behind are deleted."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        was_up = self.cluster.ready()
        state = self.load()
        started: list[str] = []
        try:
            took = self.cluster.start(timeout_s=timeout_s)
            log(f"control plane ready ({took:.1f}s): {self.cluster.server}")
            client = self.cluster.client()
            try:
                if not self._alive(state.vnode):
                    state.vnode = self._spawn_vnode()
                    self._save(state)
                    started.append("vnode")
                self._install_crds(client, deadline)
                log("CRDs established: " + ", ".join(CRD_KINDS))
                if not self._alive(state.operator):
                    state.operator = self._spawn_operator()
                    self._save(state)
                    started.append("operator")
                self._wait_nodes(client, state.vnode, deadline)
                log(f"vnode Nodes Ready: {', '.join(self.node_names)}")
                if with_kueue:
                    t_kueue = time.monotonic()
                    if not DevKueue.alive(state.kueue):
                        started.append("kueue")
                    state.kueue = self.kueue.start(client, state.kueue, deadline, log)
                    self._save(state)
                    log(f"Kueue ready ({time.monotonic() - t_kueue:.1f}s): webhooks on "
                        f"https://127.0.0.1:{state.kueue.webhook_port}")
                elif not DevKueue.alive(state.kueue):
                    remove_webhooks(client)
                    state.kueue = None
            finally:
                client.close()
            operator = self._wait_operator(state.operator, deadline)
            log(f"operator running (metrics on http://127.0.0.1:{operator.port}/metrics)")
        except BaseException:
            if "kueue" in started:
                self._stop_kueue(state)
            if "operator" in started:
                self._stop_operator(state)
            if "vnode" in started:
                self._stop_vnode(state)
            self._save(state)
            if not was_up:
                self.cluster.stop()
            raise
        return time.monotonic() - t0

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["NO_PROXY"] = "127.0.0.1,localhost"
        env.pop(procs.MARKER, None)  # not a local cluster's process
        return env

    def _spawn_vnode(self) -> StackProc:
        self.vnode_dir.mkdir(parents=True, exist_ok=True)
        config = self.vnode_dir / "vnode.yaml"
        config.write_text(yaml.safe_dump(vnode_config(self.vnode_name, self.pod_cidr)))
        log = self.cluster.logs / "vnode.log"
        argv = [self.python, "-m", "rayscale.vnode", "--kubeconfig", str(self.cluster.kubeconfig),
                "--config", str(config), "--state-dir", str(self.vnode_dir)]
        proc = procs.spawn(argv, self._env(), log)
        return StackProc(pid=proc.pid, identity=[str(self.vnode_dir), "rayscale.vnode"],
                         log=str(log))

    def _spawn_operator(self) -> StackProc:
        port = free_port()
        log = self.cluster.logs / "operator.log"
        kubeconfig = str(self.cluster.kubeconfig)
        argv = [self.python, "-m", "rayscale.cli.main", "operator", "--kubeconfig", kubeconfig,
                "--shared-pod-network", "--sidecar-kubeconfig", kubeconfig,
                "--metrics-port", str(port)]
        proc = procs.spawn(argv, self._env(), log)
        return StackProc(pid=proc.pid, identity=[kubeconfig, "operator", "--shared-pod-network"],
                         log=str(log), port=port)

    def _install_crds(self, client: Client, deadline: float) -> None:
        docs = [crd(kind) for kind in CRD_KINDS]
        for doc in docs:
            client.apply(codecs.from_dict(doc), field_manager=_FIELD_MANAGER, force=True)
        _wait(lambda: all(self._crd_ready(client, k) for k in CRD_KINDS), deadline,
              "the CRDs to be established")

    @staticmethod
    def _crd_ready(client: Client, kind: str) -> bool:
        """Established, and its storage answers a list (a new CRD answers 429 for a moment
        after Established)."""
        doc = crd(kind)
        try:
            obj = client.get(CustomResourceDefinition, doc["metadata"]["name"])
        except ApiError:
            return False
        conditions = (obj.status.conditions if obj.status else None) or []
        if not any(c.type == "Established" and c.status == "True" for c in conditions):
            return False
        names = doc["spec"]["names"]
        res = create_namespaced_resource(doc["spec"]["group"], "v1", names["kind"],
                                         names["plural"])
        try:
            list(client.list(res, namespace="*"))
        except ApiError:
            return False
        return True

    @staticmethod
    def _node_ready(client: Client, name: str) -> bool:
        try:
            node = client.get(Node, name)
        except ApiError:
            return False
        conditions = (node.status.conditions or []) if node.status else []
        if not any(c.type == "Ready" and c.status == "True" for c in conditions):
            return False
        taints = (node.spec.taints or []) if node.spec else []
        # not-ready/unreachable taints: the node lifecycle controller has not caught up
        return not any(t.key.startswith("node.kubernetes.io/") for t in taints)

    def _wait_nodes(self, client: Client, vnode: StackProc | None, deadline: float) -> None:
        def ready() -> bool:
            if not self._alive(vnode):
                raise RuntimeError(f"the vnode exited; see {vnode.log if vnode else '?'}\n"
                                   + _tail(Path(vnode.log) if vnode else None))
            return all(self._node_ready(client, n) for n in self.node_names)

        _wait(ready, deadline, "the vnode's Nodes to be Ready")

    def _wait_operator(self, operator: StackProc | None, deadline: float) -> StackProc:
        if operator is None or operator.port is None:
            raise RuntimeError("no operator recorded")
        url = f"http://127.0.0.1:{operator.port}/metrics"

        def ready() -> bool:
            if not self._alive(operator):
                raise RuntimeError(f"the operator exited; see {operator.log}\n"
                                   + _tail(Path(operator.log)))
            try:
                with urllib.request.build_opener(_NO_PROXY).open(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        _wait(ready, deadline, "the operator's /metrics")
        return operator

    # -------------------------------------------------------------------- down

    def down(self, grace_s: float = 30.0) -> list[int]:
        """Stop Kueue, the operator, the vnode (and its pods), then the control plane.

        Returns the PIDs of pod processes that outlived the vnode and were swept."""
        state = self.load()
        self._stop_kueue(state)
        self._stop_operator(state, grace_s)
        swept = self._stop_vnode(state, grace_s)
        self._save(state)
        self.cluster.stop()
        return swept

    def _stop_kueue(self, state: StackState) -> None:
        """Its webhook configurations go first, while the API server still runs."""
        client = self.cluster.client() if self.cluster.ready() else None
        try:
            self.kueue.stop(client, state.kueue)
        finally:
            if client is not None:
                client.close()
        state.kueue = None

    def _stop_operator(self, state: StackState, grace_s: float = 10.0) -> None:
        if self._alive(state.operator):
            assert state.operator is not None
            procs.stop_group(state.operator.pid, grace_s)
        state.operator = None

    def _stop_vnode(self, state: StackState, grace_s: float = 30.0) -> list[int]:
        """SIGTERM the vnode (it stops its pods and deletes its Nodes), then its group;
        then any process of a pod it ran, found by the container marker."""
        vnode = state.vnode
        if self._alive(vnode):
            assert vnode is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(vnode.pid, signal.SIGTERM)
            end = time.monotonic() + grace_s
            while self._alive(vnode) and time.monotonic() < end:
                time.sleep(0.1)
            if self._alive(vnode):
                procs.stop_group(vnode.pid, 2.0)
        state.vnode = None
        left = list(self.pod_processes())
        if left:
            procs.stop_pids(left, 2.0)
        return left

    def pod_processes(self) -> Iterator[int]:
        """Live processes of any pod this stack's vnode ran (its state dir names them)."""
        pods = self.vnode_dir / "pods"
        uids = {p.name.rsplit("_", 1)[-1] for p in pods.iterdir()} if pods.exists() else set()
        if not uids:
            return
        for pid, marker in procs.marked(VNODE_CONTAINER_MARKER):
            if marker.split("/", 1)[0] in uids:
                yield pid


def _wait(check: Callable[[], bool], deadline: float, what: str) -> None:
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


__all__ = ["CRD_KINDS", "DevStack", "StackProc", "StackState", "pod_cidr_for", "vnode_config"]
