"""Container probes on the virtual node: readiness, liveness and startup, as a kubelet runs them.

Two parts:

* :class:`ProbeState`: the pure state machine of one probe of one container run
  (Kubernetes' defaults and semantics: the first run ``initialDelaySeconds``
  after the container started, then every ``periodSeconds``; the result flips
  to success after ``successThreshold`` consecutive successes and to failure
  after ``failureThreshold`` consecutive failures; a readiness probe starts
  failed, a liveness probe starts successful, a startup probe gates both and
  stops once it succeeded). It takes the time as an argument, so tests use a
  fake clock.
* :class:`Prober`: runs the probe actions (``httpGet``, ``tcpSocket``,
  ``exec``) on **one** small thread pool shared by every pod of the vnode (no
  thread per probe; at most one run of a probe in flight). The vnode's loop
  submits what is due and collects the finished results on its own thread, so
  the states need no lock.

Where probes connect: ``httpGet`` and ``tcpSocket`` go to the pod's own loopback
address unless the probe names a ``host`` (only loopback hosts are allowed:
nothing leaves this machine); named ports are looked up in the container's
``ports``. ``exec`` runs the command with ``nsenter`` into the container
process's mount and UTS namespaces (so the pod's ``/etc/hosts``, volumes and
hostname apply) with the container's environment; it is a process per run,
the costly kind, so Ray pods get ``httpGet`` probes (see the operator).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from lightkube.models.core_v1 import Container, Probe

ProbeKind = Literal["startup", "liveness", "readiness"]

DEFAULT_PERIOD_S = 10
DEFAULT_TIMEOUT_S = 1
DEFAULT_SUCCESS = 1
DEFAULT_FAILURE = 3
USER_AGENT = "kube-probe/1.34"
#: Output kept from an exec or HTTP probe for the status message (the kubelet keeps 10 KiB).
MAX_OUTPUT = 1024


@dataclass(frozen=True)
class Action:
    """What one probe run does, resolved against the pod (address, named ports)."""

    kind: Literal["http", "tcp", "exec", "unsupported"]
    host: str = ""
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    """One probe with Kubernetes' defaults filled in."""

    kind: ProbeKind
    action: Action
    initial_delay_s: float = 0.0
    period_s: float = DEFAULT_PERIOD_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    success_threshold: int = DEFAULT_SUCCESS
    failure_threshold: int = DEFAULT_FAILURE
    termination_grace_s: float | None = None


@dataclass
class ProbeState:
    """One probe's results for one run of a container (a restart starts a fresh one)."""

    spec: ProbeSpec
    started: float  # when the container started (monotonic seconds)
    next_run: float = 0.0
    successes: int = 0
    failures: int = 0
    result: bool = False
    last_message: str = ""
    in_flight: bool = False

    def __post_init__(self) -> None:
        # liveness starts healthy; readiness and startup start failed (not yet passed)
        self.result = self.spec.kind == "liveness"
        self.next_run = self.started + self.spec.initial_delay_s

    def due(self, now: float) -> bool:
        return not self.in_flight and now >= self.next_run

    def begin(self, now: float) -> None:
        self.in_flight = True
        self.next_run = now + self.spec.period_s

    def record(self, ok: bool, message: str = "") -> bool:
        """Apply one run's outcome; True when the probe's result flipped."""
        self.in_flight = False
        self.last_message = message
        if ok:
            self.successes += 1
            self.failures = 0
            threshold = self.spec.success_threshold
            # liveness and startup have a success threshold of 1 (the API enforces it)
            flip = not self.result and (self.spec.kind != "readiness"
                                        or self.successes >= threshold)
        else:
            self.failures += 1
            self.successes = 0
            flip = self.result and self.failures >= self.spec.failure_threshold
            if self.spec.kind == "startup" and self.failures >= self.spec.failure_threshold:
                self.failures = self.spec.failure_threshold  # stays failed: container restarts
                return True
        if flip:
            self.result = ok
        return flip

    @property
    def failed_for_good(self) -> bool:
        """Liveness or startup: failed ``failureThreshold`` times in a row (restart)."""
        if self.spec.kind == "liveness":
            return not self.result
        if self.spec.kind == "startup":
            return not self.result and self.failures >= self.spec.failure_threshold
        return False


@dataclass
class ContainerProbes:
    """The probes of one container run and what they say about it."""

    startup: ProbeState | None = None
    liveness: ProbeState | None = None
    readiness: ProbeState | None = None

    @classmethod
    def for_container(cls, container: Container, pod_ip: str,
                      started: float) -> ContainerProbes:
        def state(kind: ProbeKind, probe: Probe | None) -> ProbeState | None:
            if probe is None:
                return None
            return ProbeState(parse_probe(kind, probe, container, pod_ip), started)

        return cls(startup=state("startup", container.startupProbe),
                   liveness=state("liveness", container.livenessProbe),
                   readiness=state("readiness", container.readinessProbe))

    @property
    def started(self) -> bool:
        """The startup probe passed (or there is none): the other probes may run."""
        return self.startup is None or self.startup.result

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.readiness is None or self.readiness.result

    def active(self) -> list[ProbeState]:
        """The probes that run now: the startup probe until it passed, then the others."""
        if self.startup is not None and not self.startup.result:
            return [self.startup]
        return [p for p in (self.liveness, self.readiness) if p is not None]

    def kill_reason(self) -> ProbeState | None:
        """The probe whose failure means the container must be restarted, if any."""
        for p in (self.startup, self.liveness):
            if p is not None and p.failed_for_good:
                return p
        return None


def _port(value: object, container: Container) -> int:
    """A probe's port: a number, a numeric string or the name of a container port."""
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for p in container.ports or []:
        if p.name == text:
            return p.containerPort
    raise ValueError(f"port {text!r} is not a named port of container {container.name}")


def _host(host: str | None, pod_ip: str) -> str:
    if not host:
        return pod_ip
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"probe host {host!r}: only loopback addresses are reachable here")


def parse_probe(kind: ProbeKind, probe: Probe, container: Container, pod_ip: str) -> ProbeSpec:
    """A probe from the API with Kubernetes' defaults, its action resolved for this pod."""
    try:
        if probe.httpGet is not None:
            h = probe.httpGet
            action = Action("http", host=_host(h.host, pod_ip), port=_port(h.port, container),
                            path=h.path or "/", scheme=(h.scheme or "HTTP").upper(),
                            headers=tuple((x.name, x.value) for x in h.httpHeaders or []))
        elif probe.tcpSocket is not None:
            t = probe.tcpSocket
            action = Action("tcp", host=_host(t.host, pod_ip), port=_port(t.port, container))
        elif probe.exec is not None and probe.exec.command:
            action = Action("exec", command=tuple(probe.exec.command))
        else:
            action = Action("unsupported", error="probe has no exec, httpGet or tcpSocket")
    except ValueError as e:
        action = Action("unsupported", error=str(e))
    return ProbeSpec(
        kind=kind, action=action,
        initial_delay_s=float(probe.initialDelaySeconds or 0),
        period_s=float(probe.periodSeconds or DEFAULT_PERIOD_S),
        timeout_s=float(probe.timeoutSeconds or DEFAULT_TIMEOUT_S),
        success_threshold=probe.successThreshold or DEFAULT_SUCCESS,
        failure_threshold=probe.failureThreshold or DEFAULT_FAILURE,
        termination_grace_s=(float(probe.terminationGracePeriodSeconds)
                             if probe.terminationGracePeriodSeconds is not None else None),
    )


# ------------------------------------------------------------------ actions


def run_http(a: Action, timeout_s: float) -> tuple[bool, str]:
    """Success is a status in [200, 400), as the kubelet's (redirects are not followed)."""
    conn: http.client.HTTPConnection
    if a.scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the kubelet does not verify either
        conn = http.client.HTTPSConnection(a.host, a.port, timeout=timeout_s, context=ctx)
    else:
        conn = http.client.HTTPConnection(a.host, a.port, timeout=timeout_s)
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    headers.update(dict(a.headers))
    try:
        conn.request("GET", a.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_OUTPUT).decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return False, f'Get "{a.scheme.lower()}://{a.host}:{a.port}{a.path}": {e}'
    finally:
        conn.close()
    if 200 <= resp.status < 400:
        return True, body
    return False, f"HTTP probe failed with statuscode: {resp.status}"


def run_tcp(a: Action, timeout_s: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((a.host, a.port), timeout=timeout_s):
            return True, ""
    except OSError as e:
        return False, f"dial tcp {a.host}:{a.port}: {e}"


@dataclass(frozen=True)
class ExecTarget:
    """Where an exec probe runs: the container's first process and its environment."""

    pid: int
    env: Mapping[str, str]
    cwd: str


def run_exec(a: Action, timeout_s: float, target: ExecTarget,
             nsenter: str = "nsenter") -> tuple[bool, str]:
    """The command in the container's mount and UTS namespaces; success is exit code 0."""
    argv = [nsenter, f"--target={target.pid}", "--mount", "--uts", f"--wdns={target.cwd}",
            "--", *a.command]
    try:
        proc = subprocess.Popen(argv, env=dict(target.env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        return False, f"exec: {e}"
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"command timed out after {timeout_s:g}s"
    text = out[-MAX_OUTPUT:].decode(errors="replace")
    if proc.returncode == 0:
        return True, text
    return False, f"command failed: exit code {proc.returncode}: {text}".rstrip()


# ------------------------------------------------------------------- prober


@dataclass
class Prober:
    """One thread pool for every probe of the vnode; results come back on the loop's thread.

    ``max_workers`` bounds how many probes run at once (a slow endpoint holds a
    worker for at most its ``timeoutSeconds``); due probes wait their turn.
    """

    max_workers: int = 4
    _pool: ThreadPoolExecutor | None = None
    _pending: list[tuple[ProbeState, Future[tuple[bool, str]]]] = field(default_factory=list)

    def submit(self, state: ProbeState, now: float,
               exec_target: Callable[[], ExecTarget | None]) -> None:
        """Start one run of a due probe (the caller checked :meth:`ProbeState.due`)."""
        state.begin(now)
        a = state.spec.action
        if a.kind == "unsupported":
            state.record(False, a.error)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_workers,
                                            thread_name_prefix="probe")
        timeout = state.spec.timeout_s
        if a.kind == "http":
            fut = self._pool.submit(run_http, a, timeout)
        elif a.kind == "tcp":
            fut = self._pool.submit(run_tcp, a, timeout)
        else:
            target = exec_target()
            if target is None:
                state.record(False, "container is not running")
                return
            fut = self._pool.submit(run_exec, a, timeout, target)
        self._pending.append((state, fut))

    def collect(self) -> bool:
        """Record every finished run; True when some probe's result flipped."""
        changed = False
        still = []
        for state, fut in self._pending:
            if not fut.done():
                still.append((state, fut))
                continue
            try:
                ok, message = fut.result()
            except Exception as e:  # a probe must never break the loop
                ok, message = False, f"probe error: {e}"
            changed |= state.record(ok, message)
        self._pending = still
        return changed

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
