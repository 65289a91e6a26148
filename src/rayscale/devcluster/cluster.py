"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-scheduler and kube-controller-manager as local processes.

Everything listens on 127.0.0.1 only, on free ports picked at first start and
kept in ``state.json`` (so a restarted etcd keeps its member URLs). Each
component runs in its own session (process group); ``stop`` signals those
groups by the PIDs recorded at start, after checking each PID still runs our
binary with our arguments. Nothing is ever found or stopped by name.

etcd's data directory has a lock file, ``etcd.lock``: a start takes it before
it spawns etcd and hands it to etcd, which holds it for as long as it lives. So
a second etcd is never started on a data directory another one holds, and an
etcd that ``state.json`` lost is still found (and stopped) as the lock's holder.
A failed start stops every process it started, by the handles it got.

There is no kubelet and no kube-proxy: Nodes come from the virtual node
(:mod:`rayscale.vnode`). The service CIDR is only a config value; no
component routes to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
from lightkube import Client, KubeConfig
from pydantic import BaseModel

from rayscale import procs
from rayscale.devcluster import binaries
from rayscale.devcluster.certs import Pki, ensure_pki
from rayscale.devcluster.kubeconfig import write_kubeconfig
from rayscale.paths import rayscale_home
from rayscale.ports import free_port, port_free

SERVICE_CIDR = "10.96.0.0/12"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
_NO_PROXY = urllib.request.ProxyHandler({})  # loopback only: never via a proxy


_PORT_KEYS = {"etcd": ("etcd_client", "etcd_peer"), "kube-apiserver": ("apiserver",),
              "kube-controller-manager": ("controller_manager",),
              "kube-scheduler": ("scheduler",)}


class PortInUse(RuntimeError):
    def __init__(self, comp: str, message: str) -> None:
        super().__init__(message)
        self.comp = comp


class Ports(BaseModel):
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


@dataclass
class _Started:
    """A process this start spawned: its handle, and where its log began."""

    proc: subprocess.Popen[bytes]
    log_offset: int


class Proc(BaseModel):
    pid: int
    identity: str  # an argument only this cluster's process has (PID-reuse guard)


class State(BaseModel):
    name: str
    ports: Ports
    procs: dict[str, Proc] = {}
    started_at: float | None = None


def default_state_dir(name: str = "default") -> Path:
    return rayscale_home() / "devcluster" / name


@dataclass
class DevCluster:
    """One control plane whose files live in ``state_dir``."""

    state_dir: Path
    name: str = "rayscale-dev"
    bin_dir: Path | None = None
    disable_service_account_admission: bool = True  # as envtest: no wait for SA tokens

    def __post_init__(self) -> None:
        # absolute: the components run in it (cwd), and etcd's identity argument names it
        self.state_dir = self.state_dir.absolute()

    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.state_dir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _etcd_identity(self) -> str:
        return f"--data-dir={self.state_dir / 'etcd'}"

    @property
    def etcd_lock(self) -> Path:
        """Held (inherited) by the etcd that runs on ``etcd/``, for as long as it lives."""
        return self.state_dir / "etcd.lock"

    def load_state(self) -> State | None:
        try:
            return State.model_validate_json(self._state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save(self, state: State) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self._state_file)

    @property
    def server(self) -> str:
        state = self.load_state()
        if state is None:
            raise RuntimeError(f"no dev cluster state in {self.state_dir}")
        return f"https://127.0.0.1:{state.ports.apiserver}"

    # ---------------------------------------------------------------- status

    def running(self) -> dict[str, bool]:
        """Which components' recorded processes are alive (and still ours)."""
        state = self.load_state()
        if state is None:
            return {c: False for c in ORDER}
        return {
            c: c in state.procs and procs.is_alive(state.procs[c].pid, state.procs[c].identity)
            for c in ORDER
        }

    def ready(self) -> bool:
        state = self.load_state()
        return state is not None and all(self.running().values()) and self._apiserver_ready(state)

    # ----------------------------------------------------------------- start

    def start(self, timeout_s: float = 120.0) -> float:
        """Start whatever is not running and wait until all are healthy.

        Returns the seconds it took. Idempotent: a running cluster is left as is.
        """
        t0 = time.monotonic()
        bins = self.bin_dir or binaries.ensure_built()
        missing = binaries.missing(bins)
        if missing:
            raise RuntimeError(f"missing control-plane binaries in {bins}: {missing}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        ensure_pki(self.pki.dir, SERVICE_IP)
        state = self._state_with_ports()
        self._write_kubeconfigs(state)
        alive = self.running()
        deadline = t0 + timeout_s
        started: dict[str, _Started] = {}
        try:
            self._bring_up(["etcd"], state, bins, deadline, alive, started)
            self._bring_up(["kube-apiserver"], state, bins, deadline, alive, started)
            self._bring_up(["kube-controller-manager", "kube-scheduler"], state, bins, deadline,
                           alive, started)
        except BaseException:
            # what this start spawned is stopped by its handle (an unreaped child: its PID
            # cannot have been reused), then whatever else state.json or the lock names
            for comp in reversed(ORDER):
                if comp in started and started[comp].proc.poll() is None:
                    procs.stop_group(started[comp].proc.pid)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        started[comp].proc.wait(5)
            self.stop()
            raise
        state.started_at = time.time()
        self._save(state)
        return time.monotonic() - t0

    def _write_kubeconfigs(self, state: State) -> None:
        server = f"https://127.0.0.1:{state.ports.apiserver}"
        write_kubeconfig(self.kubeconfig, self.pki, server, "admin", self.name)
        for who in ("kube-scheduler", "kube-controller-manager"):
            write_kubeconfig(self.state_dir / f"{who}.kubeconfig", self.pki, server, who,
                             self.name)

    def _probe(self, comp: str, state: State) -> Callable[[], bool]:
        if comp == "etcd":
            return functools.partial(self._etcd_healthy, state)
        if comp == "kube-apiserver":
            return functools.partial(self._apiserver_ready, state)
        port = (state.ports.controller_manager if comp == "kube-controller-manager"
                else state.ports.scheduler)
        return functools.partial(self._healthz, port)

    def _bring_up(self, comps: list[str], state: State, bins: Path, deadline: float,
                  alive: dict[str, bool], started: dict[str, _Started]) -> None:
        """Spawn what is not running, wait until healthy; a port someone took between
        picking and binding (free ports are picked, then bound) is re-picked, twice."""
        for attempt in range(3):
            for comp in comps:
                if not alive[comp]:
                    started[comp] = self._spawn(state, comp, bins)
                    alive[comp] = True
            try:
                for comp in comps:
                    self._wait(self._probe(comp, state), deadline, comp, state,
                               started.get(comp))
                return
            except PortInUse as e:
                if attempt == 2:
                    raise
                alive[e.comp] = False
                for key in _PORT_KEYS[e.comp]:
                    setattr(state.ports, key, free_port())
                self._save(state)
                if e.comp == "kube-apiserver":
                    self._write_kubeconfigs(state)

    def _state_with_ports(self) -> State:
        state = self.load_state()
        if state is not None:
            running = self.running()
            ports: dict[str, int] = state.ports.model_dump()
            # keep recorded ports (etcd's member URLs live in its data), re-pick taken ones
            owner = {"etcd_client": "etcd", "etcd_peer": "etcd", "apiserver": "kube-apiserver",
                     "controller_manager": "kube-controller-manager",
                     "scheduler": "kube-scheduler"}
            for key, port in ports.items():
                if not running[owner[key]] and not port_free(port):
                    ports[key] = free_port()
            state.ports = Ports(**ports)
            return state
        fresh = Ports(etcd_client=free_port(), etcd_peer=free_port(), apiserver=free_port(),
                      controller_manager=free_port(), scheduler=free_port())
        state = State(name=self.name, ports=fresh)
        self._save(state)
        return state

    def _argv(self, comp: str, state: State, bins: Path) -> tuple[list[str], str]:
        """The command line and its identity argument."""
        p, pki, d = state.ports, self.pki, self.state_dir
        etcd_url = f"http://127.0.0.1:{p.etcd_client}"
        if comp == "etcd":
            peer = f"http://127.0.0.1:{p.etcd_peer}"
            ident = self._etcd_identity
            return [
                str(bins / "etcd"), "--name=default", ident,
                f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}", "--initial-cluster-state=new",
                "--unsafe-no-fsync", "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ], ident
        if comp == "kube-apiserver":
            ident = f"--tls-cert-file={pki.serving_cert}"
            argv = [
                str(bins / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={p.apiserver}",
                ident, f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                # front-proxy settings as kubeadm writes them (keeps the aggregation layer
                # and the components' delegated authentication quiet)
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                f"--cert-dir={d / 'apiserver-certs'}",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                # the `kubernetes` Service's Endpoints would be 127.0.0.1, which validation
                # rejects; in-pod clients get KUBERNETES_SERVICE_HOST from the vnode instead
                "--endpoint-reconciler-type=none",
                # kubelet API (logs, exec, port-forward): vnodes listen on their Nodes'
                # loopback InternalIPs and accept only this client certificate; their
                # serving certificates come from the kubelet-serving signer (this CA)
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                f"--kubelet-client-certificate={pki.client_cert('kubelet-client')}",
                f"--kubelet-client-key={pki.client_key('kubelet-client')}",
                "--event-ttl=1h",
                "--v=1",
            ]
            if self.disable_service_account_admission:
                argv.append("--disable-admission-plugins=ServiceAccount")
            return argv, ident
        kubeconfig = d / f"{comp}.kubeconfig"
        ident = f"--kubeconfig={kubeconfig}"
        common = [
            ident,
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={d / (comp + '-certs')}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        if comp == "kube-scheduler":
            return [str(bins / comp), *common, f"--secure-port={p.scheduler}"], ident
        return [
            str(bins / comp), *common,
            f"--secure-port={p.controller_manager}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=true",  # per-controller identities, as kubeadm
            # pod addresses are loopback, which Endpoints/EndpointSlice validation rejects:
            # these controllers could only fail (the vnode resolves services itself)
            "--controllers=*,-endpoints-controller,-endpointslice-controller,"
            "-endpointslice-mirroring-controller",
        ], ident

    def _spawn(self, state: State, comp: str, bins: Path) -> _Started:
        argv, ident = self._argv(comp, state, bins)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["NO_PROXY"] = "127.0.0.1,localhost"
        log = self.logs / f"{comp}.log"
        offset = log.stat().st_size if log.exists() else 0
        lock = self._lock_etcd_data() if comp == "etcd" else None
        try:
            proc = procs.spawn(argv, env, log, cwd=self.state_dir,
                               pass_fds=() if lock is None else (lock,))
        finally:
            if lock is not None:
                os.close(lock)  # etcd holds it now (or, if the spawn failed, nobody)
        state.procs[comp] = Proc(pid=proc.pid, identity=ident)
        self._save(state)
        return _Started(proc, offset)

    def _lock_etcd_data(self) -> int:
        """Take the data directory's lock (an fd for etcd to inherit), or refuse."""
        fd = os.open(self.etcd_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"etcd data dir {self.state_dir / 'etcd'} is held by process(es) "
                f"{self.etcd_lock_holders() or '(a start under way)'}, not recorded in "
                f"state.json: not starting a second etcd on it (`rayscale dev-cluster down` "
                f"stops it)") from None
        return fd

    def etcd_lock_holders(self) -> list[int]:
        """The etcds that hold the lock file open: those this cluster started (a start that
        has the lock for a moment, before its etcd inherits it, is not one)."""
        try:
            lock = os.stat(self.etcd_lock)
        except OSError:
            return []
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                fds = list((entry / "fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    st = os.stat(fd)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (lock.st_dev, lock.st_ino):
                    if procs.is_alive(int(entry.name), self._etcd_identity):
                        out.append(int(entry.name))
                    break
        return out

    def _wait(self, check: Callable[[], bool], deadline: float, comp: str, state: State,
              started: _Started | None) -> None:
        """Until ``check`` passes; a process this start spawned is judged by its handle."""
        while True:
            if check():
                return
            proc = state.procs.get(comp)
            if started is not None:
                exited = started.proc.poll() is not None
            else:
                exited = proc is None or not procs.is_alive(proc.pid, proc.identity)
            if exited:
                log = self.logs / (comp + ".log")
                tail = _tail(log, since=started.log_offset if started else 0)
                message = f"{comp} exited during start; see {log}\n{tail}"
                if started is not None and "address already in use" in tail:
                    raise PortInUse(comp, message)
                raise RuntimeError(message)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{comp} not healthy in time; see {self.logs}")
            time.sleep(0.2)

    # --------------------------------------------------------------- probes

    def _etcd_healthy(self, state: State) -> bool:
        url = f"http://127.0.0.1:{state.ports.etcd_client}/health"
        try:
            with urllib.request.build_opener(_NO_PROXY).open(url, timeout=2) as resp:
                body = json.loads(resp.read())
                return bool(body.get("health") == "true")
        except (OSError, ValueError):
            return False

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.client_cert("admin")), str(self.pki.client_key("admin")))
        return ctx

    def _apiserver_ready(self, state: State) -> bool:
        url = f"https://127.0.0.1:{state.ports.apiserver}/readyz"
        opener = urllib.request.build_opener(_NO_PROXY,
                                             urllib.request.HTTPSHandler(context=self._admin_ssl()))
        try:
            with opener.open(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def version(self) -> dict[str, str]:
        """The API server's ``/version`` (gitVersion, gitMajor, gitMinor, ...)."""
        state = self.load_state()
        if state is None:
            raise RuntimeError(f"no dev cluster state in {self.state_dir}")
        opener = urllib.request.build_opener(_NO_PROXY,
                                             urllib.request.HTTPSHandler(context=self._admin_ssl()))
        with opener.open(f"https://127.0.0.1:{state.ports.apiserver}/version", timeout=5) as r:
            data: dict[str, str] = json.loads(r.read())
            return data

    def _healthz(self, port: int) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert of a loopback component
        opener = urllib.request.build_opener(_NO_PROXY, urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(f"https://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    # ------------------------------------------------------------------ stop

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every recorded component (reverse order), by process group, and any etcd
        that holds this cluster's data lock without being recorded."""
        state = self.load_state()
        if state is not None:
            for comp in reversed(ORDER):
                proc = state.procs.get(comp)
                if proc is not None and procs.is_alive(proc.pid, proc.identity):
                    procs.stop_group(proc.pid, grace_s)
        # an etcd that state.json does not record (lost track of) still holds the lock
        for pid in self.etcd_lock_holders():
            procs.stop_group(pid, grace_s)  # its own group: spawned in a session of its own
        if state is None:
            return
        state.procs = {}
        state.started_at = None
        self._save(state)

    def client(self, timeout_s: float = 10.0) -> Client:
        """A lightkube Client with the admin identity."""
        return admin_client(self.kubeconfig, timeout_s)


def admin_client(kubeconfig: Path, timeout_s: float = 10.0) -> Client:
    """A lightkube Client from a kubeconfig file; ignores proxy settings (loopback only)."""
    return Client(KubeConfig.from_file(kubeconfig), timeout=httpx2.Timeout(timeout_s),
                  trust_env=False)


def _tail(path: Path, lines: int = 15, since: int = 0) -> str:
    """The last ``lines`` lines of what was written to ``path`` from offset ``since`` on."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
