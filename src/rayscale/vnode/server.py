"""The virtual node: a kubelet stand-in serving one or more Node objects.

One loop owns all state (no locks): watch threads only feed a queue with Pod
and Service events; the loop registers and heartbeats the Nodes
(Lease renewals in ``kube-node-lease`` every ``renew_interval_s``, a
``Ready`` status every ``status_interval_s``), turns pods bound to its Nodes
into :class:`~rayscale.vnode.runtime.PodRun` s, steps their processes,
pushes each status when it changes, rewrites pods' hosts files when
service endpoints change, and resyncs from a full list every 30 s in case a watch
missed something. A pod being deleted gets SIGTERM, SIGKILL after its grace
period, and is then removed with a zero-grace delete, as a kubelet does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import logging
import queue
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import httpx2
from lightkube import ALL_NS, ApiError, Client, KubeConfig
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Node, Pod, Secret, Service, ServiceAccount
from lightkube.types import OnErrorAction, OnErrorResult, PatchType

from rayscale.kubedecode import warm_up
from rayscale.labels import POOL_LABEL, VNODE_LABEL
from rayscale.vnode.config import Pool, VNodeConfig
from rayscale.vnode.hosts import ServiceTable, hosts_content, resolv_content, write_in_place
from rayscale.vnode.kubelet import KubeletApi, tls_context
from rayscale.vnode.kubelet_cert import serving_identity
from rayscale.vnode.kubelet_http import ContainerView, PodView
from rayscale.vnode.pacing import StartPacer
from rayscale.vnode.probes import Prober
from rayscale.vnode.runtime import PodRun, Tools, now_rfc3339

log = logging.getLogger("rayscale.vnode")

KUBELET_VERSION = "v1.34.4"
LEASE_NAMESPACE = "kube-node-lease"
RESYNC_S = 30.0
TICK_S = 0.2
SHUTDOWN_GRACE_S = 5.0


def make_client(kubeconfig: Path, timeout_s: float = 10.0) -> Client:
    return Client(KubeConfig.from_file(kubeconfig), timeout=httpx2.Timeout(timeout_s),
                  trust_env=False)


class IpPool:
    """Loopback addresses for pods, round-robin so a freed address is not reused at once."""

    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr)
        self.cursor = 0
        self.used: set[str] = set()

    def _ok(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        last = int(ip) & 0xFF
        return str(ip) != "127.0.0.1" and last not in (0, 1, 255) and str(ip) not in self.used

    def allocate(self) -> str:
        n = self.net.num_addresses
        for _ in range(n):
            ip = self.net[self.cursor % n]
            self.cursor += 1
            if self._ok(ip):
                self.used.add(str(ip))
                return str(ip)
        raise RuntimeError(f"pod CIDR {self.net} exhausted")

    def claim(self, ip: str | None) -> str | None:
        """Keep an address a pod already has (vnode restart), if it is ours and free."""
        if not ip:
            return None
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr in self.net and self._ok(addr):
            self.used.add(ip)
            return ip
        return None

    def release(self, ip: str) -> None:
        self.used.discard(ip)


@dataclass
class NodeInfo:
    name: str
    pool: Pool
    ip: str
    last_status: float = 0.0
    last_renew: float = 0.0


def _watch_errors(stop: threading.Event) -> Any:
    def handler(e: Exception, count: int) -> OnErrorResult:
        if stop.is_set():
            return OnErrorResult(OnErrorAction.STOP)
        return OnErrorResult(OnErrorAction.RETRY, sleep=min(5.0, 0.5 * count))

    return handler


class VirtualNode:
    def __init__(self, config: VNodeConfig, kubeconfig: Path, state_dir: Path) -> None:
        self.config = config
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self.client = make_client(kubeconfig)
        self.tools = None if config.fake_run else Tools.find()
        self.ips = IpPool(config.pod_cidr)
        self.nodes: dict[str, NodeInfo] = {}
        for name, pool in config.node_names():
            self.nodes[name] = NodeInfo(name, pool, self.ips.allocate())
        self.runs: dict[str, PodRun] = {}
        self.pushed: dict[str, dict[str, Any]] = {}
        self.finished: set[str] = set()  # uids of pods done before we met them
        self.services = ServiceTable()
        self.events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self.stop_event = threading.Event()
        self.extra_env = self._api_env()
        self.pacer = StartPacer.for_this_machine()
        self.prober = Prober()  # one pool for every probe of every pod
        self.last_resync = 0.0
        self.kubelet: KubeletApi | None = None
        self.kubelet_port = 0

    def _api_env(self) -> dict[str, str]:
        """In-pod API address: the real apiserver on loopback (never a ClusterIP)."""
        try:
            server = self.client.config.cluster.server
        except AttributeError:
            return {}
        url = urlparse(server)
        if url.hostname and url.hostname.startswith("127.") and url.port:
            return {"KUBERNETES_SERVICE_HOST": url.hostname,
                    "KUBERNETES_SERVICE_PORT": str(url.port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(url.port)}
        return {}

    # ----------------------------------------------------------------- nodes

    def _node_labels(self, info: NodeInfo) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": info.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": info.pool.name,
            POOL_LABEL: info.pool.name,
            VNODE_LABEL: self.config.name,
            **info.pool.labels,
        }

    def _node_status(self, info: NodeInfo) -> dict[str, Any]:
        stamp = now_rfc3339()

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}

        return {
            "capacity": info.pool.capacity,
            "allocatable": info.pool.capacity,
            "conditions": [
                cond("Ready", "True", "KubeletReady", "rayscale vnode is ready"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("NetworkUnavailable", "False", "RouteCreated", "loopback"),
            ],
            "addresses": [{"type": "InternalIP", "address": info.ip},
                          {"type": "Hostname", "address": info.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "machineID": info.name, "systemUUID": info.name, "bootID": info.name,
                "kernelVersion": "", "osImage": "rayscale vnode",
                "containerRuntimeVersion": "rayscale://0.1",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    # ----------------------------------------------------------- kubelet API

    def _client_ca(self) -> str | None:
        """The cluster CA (PEM) from the kubeconfig: it signs the API server's client."""
        cluster = self.client.config.cluster
        if cluster.certificate_auth_data:
            return base64.b64decode(cluster.certificate_auth_data).decode()
        if cluster.certificate_auth:
            return Path(cluster.certificate_auth).read_text()
        return None

    def _start_kubelet_api(self) -> None:
        """Serve logs/exec/port-forward on every Node's address (not in fake-run)."""
        ca = self._client_ca()
        if self.tools is None or ca is None:
            if ca is None:
                log.warning("no cluster CA in the kubeconfig: no kubelet API (logs, exec)")
            return
        ips = [info.ip for info in self.nodes.values()]
        first = next(iter(self.nodes))
        cert, key = serving_identity(self.client, first, self.state_dir / "kubelet", ips)
        self.kubelet = KubeletApi(self._pod_view, ips, tls_context(cert, key, ca))
        self.kubelet_port = self.kubelet.start()

    def _pod_view(self, namespace: str, name: str) -> PodView | None:
        """Called from the kubelet API's thread: reads a copy, changes nothing."""
        for run in list(self.runs.values()):
            if run.namespace == namespace and run.name == name:
                containers = {}
                for c in run.containers():
                    proc = c.proc
                    running = proc is not None and c.state == "running"
                    containers[c.name] = ContainerView(proc.pid if running and proc else None,
                                                       c.restart_count)
                return PodView(namespace, name, run.ip, run.directory, containers)
        return None

    def register_nodes(self) -> None:
        for info in self.nodes.values():
            taints = [t.model_dump(exclude_none=True) for t in info.pool.taints]
            meta = {"name": info.name, "labels": self._node_labels(info)}
            try:
                self.client.get(Node, info.name)
                self.client.patch(Node, info.name, {"metadata": {"labels": meta["labels"]},
                                                    "spec": {"taints": taints or None}},
                                  patch_type=PatchType.MERGE)
            except ApiError as e:
                if e.status.code != 404:
                    raise
                # with its status (Ready) at once, so the node lifecycle controller
                # has no reason to taint it not-ready
                body = {"apiVersion": "v1", "kind": "Node", "metadata": meta,
                        "spec": {"taints": taints} if taints else {},
                        "status": self._node_status(info)}
                self.client.create(cast(Node, Node.from_dict(body)))
            self._push_node_status(info, time.monotonic())
            self._renew_lease(info, time.monotonic())
            log.info("registered node %s (pool %s, %s)", info.name, info.pool.name,
                     info.pool.capacity)

    def _push_node_status(self, info: NodeInfo, now: float) -> None:
        self.client.patch(Node.Status, info.name, {"status": self._node_status(info)},
                          patch_type=PatchType.STRATEGIC)
        info.last_status = now

    def _renew_lease(self, info: NodeInfo, now: float) -> None:
        renew = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"
        try:
            self.client.patch(Lease, info.name, {"spec": {"renewTime": renew,
                                                          "holderIdentity": info.name}},
                              namespace=LEASE_NAMESPACE, patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:
                raise
            node = self.client.get(Node, info.name)
            assert node.metadata is not None
            self.client.create(cast(Lease, Lease.from_dict({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": info.name, "namespace": LEASE_NAMESPACE,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": info.name,
                                                  "uid": node.metadata.uid}]},
                "spec": {"holderIdentity": info.name,
                         "leaseDurationSeconds": self.config.lease_seconds},
            })))
            # renewTime is a MicroTime: patched as a string, the model would drop the micros
            self.client.patch(Lease, info.name, {"spec": {"renewTime": renew}},
                              namespace=LEASE_NAMESPACE, patch_type=PatchType.MERGE)
        info.last_renew = now

    def _heartbeat(self, now: float) -> None:
        for info in self.nodes.values():
            try:
                if now - info.last_renew >= self.config.renew_interval_s:
                    self._renew_lease(info, now)
                if now - info.last_status >= self.config.status_interval_s:
                    self._push_node_status(info, now)
            except (ApiError, httpx2.HTTPError) as e:
                log.warning("heartbeat of %s failed: %s", info.name, e)

    # --------------------------------------------------------------- watches

    def _watch(self, kind: str) -> None:
        client = make_client(self.kubeconfig, timeout_s=30.0)
        while not self.stop_event.is_set():
            try:
                stream: Iterator[tuple[str, Any]]
                if kind == "pod":
                    stream = client.watch(Pod, namespace=ALL_NS, server_timeout=20,
                                          on_error=_watch_errors(self.stop_event))
                else:
                    stream = client.watch(Service, namespace=ALL_NS, server_timeout=20,
                                          on_error=_watch_errors(self.stop_event))
                for op, obj in stream:
                    if self.stop_event.is_set():
                        return
                    self.events.put((kind, op, obj))
            except Exception as e:
                if self.stop_event.is_set():
                    return
                log.warning("%s watch failed: %s", kind, e)
                time.sleep(1.0)

    # ------------------------------------------------------------------ pods

    def _pod_dir(self, pod: Pod) -> Path:
        assert pod.metadata is not None
        m = pod.metadata
        return self.state_dir / "pods" / f"{m.namespace}_{m.name}_{m.uid}"

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "ConfigMap":
                cm = self.client.get(ConfigMap, name, namespace=namespace)
                return dict(cm.data or {})
            secret = self.client.get(Secret, name, namespace=namespace)
            data = {k: base64.b64decode(v).decode(errors="replace")
                    for k, v in (secret.data or {}).items()}
            data.update(secret.stringData or {})
            return data
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    def _token_request(self, namespace: str, account: str, audiences: list[str],
                       expiration_s: int, pod_name: str, pod_uid: str) -> tuple[str, float]:
        """A ServiceAccount token bound to the pod, as the kubelet asks for one."""
        answer = self.client.create(
            ServiceAccount.Token(
                metadata=ObjectMeta(name=account, namespace=namespace),
                spec=TokenRequestSpec(
                    audiences=audiences, expirationSeconds=expiration_s,
                    boundObjectRef=BoundObjectReference(apiVersion="v1", kind="Pod",
                                                        name=pod_name, uid=pod_uid)),
            ),
            account, namespace=namespace,
        )
        status = answer.status
        assert status is not None and status.token
        expires = status.expirationTimestamp
        lifetime = float(expiration_s)
        if expires is not None:
            lifetime = (expires - dt.datetime.now(dt.UTC)).total_seconds()
        return status.token, lifetime

    def on_pod(self, op: str, pod: Pod, now: float) -> None:
        meta, spec = pod.metadata, pod.spec
        if meta is None or spec is None or meta.uid is None or spec.nodeName not in self.nodes:
            return
        uid = meta.uid
        run = self.runs.get(uid)
        if op == "DELETED":
            if run is not None:
                run.begin_termination(0.0, now)
                self._mark_gone(run)
            self.finished.discard(uid)
            return
        deleting = meta.deletionTimestamp is not None
        if run is None:
            phase = pod.status.phase if pod.status is not None else None
            if deleting or phase in ("Succeeded", "Failed"):
                if deleting:
                    self._finalize(pod)
                else:
                    self.finished.add(uid)
                return
            node = self.nodes[spec.nodeName]
            old_ip = pod.status.podIP if pod.status is not None else None
            ip = self.ips.claim(old_ip) or self.ips.allocate()
            run = PodRun(pod=pod, ip=ip, host_ip=node.ip, directory=self._pod_dir(pod),
                         tools=self.tools, lookup=self._lookup,
                         node_allocatable=node.pool.capacity, extra_env=self.extra_env,
                         pacer=self.pacer, token_request=self._token_request,
                         images=self.config.image_map(),
                         prober=self.prober if self.tools is not None else None)
            self._write_hosts(run)
            self.runs[uid] = run
            log.info("pod %s/%s on %s: %s", run.namespace, run.name, spec.nodeName, ip)
        else:
            run.pod = pod
        if deleting:
            grace = meta.deletionGracePeriodSeconds
            run.begin_termination(float(30 if grace is None else grace), now)

    def _mark_gone(self, run: PodRun) -> None:
        """The pod object is gone already: finish its processes without API calls."""
        run.gone = True

    def _finalize(self, pod: Pod) -> None:
        """Remove a terminated pod's object, as the kubelet does (zero grace)."""
        assert pod.metadata is not None and pod.metadata.name is not None
        try:
            self.client.delete(Pod, pod.metadata.name, namespace=pod.metadata.namespace,
                               grace_period=0)
        except ApiError as e:
            if e.status.code != 404:
                log.warning("delete of %s failed: %s", pod.metadata.name, e)

    def _push_status(self, run: PodRun, final: bool = False) -> None:
        comparable = run.comparable_status()
        if not final and self.pushed.get(run.uid) == comparable:
            return
        try:
            self.client.patch(Pod.Status, run.name, {"status": run.status()},
                              namespace=run.namespace, patch_type=PatchType.STRATEGIC)
            self.pushed[run.uid] = comparable
        except ApiError as e:
            if e.status.code == 404:
                run.begin_termination(0.0, time.monotonic())
                self._mark_gone(run)
            else:
                log.warning("status of %s/%s: %s", run.namespace, run.name, e)

    def _step_pods(self, now: float) -> None:
        self.prober.collect()  # finished probe runs, before the pods look at their results
        for uid, run in list(self.runs.items()):
            if run.terminating:
                if run.finished_terminating(now):
                    if not run.gone:
                        self._push_status(run, final=True)
                        self._finalize(run.pod)
                    self.runs.pop(uid, None)
                    self.pushed.pop(uid, None)
                    self.ips.release(run.ip)
                    log.info("pod %s/%s finished", run.namespace, run.name)
                continue
            run.step(now)
            self._push_status(run)

    # ----------------------------------------------------------------- hosts

    def _write_hosts(self, run: PodRun) -> None:
        if self.tools is None:
            return  # fake-run: no process runs, so none reads a hosts file
        spec = run.pod.spec
        assert spec is not None
        services = self.services.services()
        write_in_place(run.hosts_file, hosts_content(
            run.name, run.namespace, run.ip, services, spec.hostname, spec.subdomain))
        write_in_place(run.resolv_file, resolv_content(run.namespace))

    def _write_all_hosts(self) -> None:
        if self.tools is None:
            return  # fake-run (and each rewrite is every pod's file: a cost per Service)
        for run in self.runs.values():
            self._write_hosts(run)

    # ---------------------------------------------------------------- resync

    def _resync(self, now: float) -> None:
        self.last_resync = now
        try:
            pods = list(self.client.list(Pod, namespace=ALL_NS))
            services = list(self.client.list(Service, namespace=ALL_NS))
        except (ApiError, httpx2.HTTPError) as e:
            log.warning("resync failed: %s", e)
            return
        seen = set()
        for pod in pods:
            if pod.metadata is not None and pod.metadata.uid:
                seen.add(pod.metadata.uid)
                self.on_pod("MODIFIED", pod, now)
        for uid, run in list(self.runs.items()):
            if uid not in seen:
                run.begin_termination(0.0, now)
                self._mark_gone(run)
        table = ServiceTable()
        for svc in services:
            table.update_service("ADDED", svc)
        for pod in pods:
            table.update_pod("ADDED", pod)
        if table.services() != self.services.services():
            self.services = table
            self._write_all_hosts()
        else:
            self.services = table

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # the watch threads must not be the first to decode a type (see kubedecode)
        warm_up((Node, Pod, Service, Lease, ConfigMap, Secret, ServiceAccount.Token))
        self._start_kubelet_api()
        self.register_nodes()
        threads = [threading.Thread(target=self._watch, args=(k,), daemon=True,
                                    name=f"watch-{k}") for k in ("pod", "svc")]
        for t in threads:
            t.start()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                hosts_dirty = False
                deadline = now + TICK_S
                while True:
                    try:
                        kind, op, obj = self.events.get(timeout=max(0.0, deadline -
                                                                    time.monotonic()))
                    except queue.Empty:
                        break
                    if kind == "pod":
                        hosts_dirty |= self.services.update_pod(op, obj)
                        self.on_pod(op, obj, time.monotonic())
                    elif self.services.update_service(op, obj):
                        hosts_dirty = True
                    if self.events.empty():
                        break
                if hosts_dirty:
                    self._write_all_hosts()
                now = time.monotonic()
                self._heartbeat(now)
                self._step_pods(now)
                if now - self.last_resync >= RESYNC_S:
                    self._resync(now)
        finally:
            self.shutdown()

    def request_stop(self, *_: object) -> None:
        self.stop_event.set()

    def shutdown(self) -> None:
        self.stop_event.set()
        now = time.monotonic()
        for run in self.runs.values():
            run.begin_termination(SHUTDOWN_GRACE_S, now)
        deadline = now + SHUTDOWN_GRACE_S + 5.0
        while self.runs and time.monotonic() < deadline:
            for uid, run in list(self.runs.items()):
                if run.finished_terminating(time.monotonic()):
                    self.runs.pop(uid)
            time.sleep(0.05)
        for run in self.runs.values():
            run.kill_now()
        self.runs.clear()
        if self.kubelet is not None:
            self.kubelet.stop()
        self.prober.shutdown()
        if self.config.delete_nodes_on_exit:
            for info in self.nodes.values():
                with contextlib.suppress(ApiError, httpx2.HTTPError):
                    self.client.delete(Lease, info.name, namespace=LEASE_NAMESPACE)
                with contextlib.suppress(ApiError, httpx2.HTTPError):
                    self.client.delete(Node, info.name)
        self.client.close()


def serve(config: VNodeConfig, kubeconfig: Path, state_dir: Path) -> None:
    """Run a virtual node until SIGTERM/SIGINT; its pods' processes stop with it."""
    vnode = VirtualNode(config, kubeconfig, state_dir)
    signal.signal(signal.SIGTERM, vnode.request_stop)
    signal.signal(signal.SIGINT, vnode.request_stop)
    vnode.run()


def clean_state(state_dir: Path) -> None:
    shutil.rmtree(state_dir / "pods", ignore_errors=True)
