"""Traffic to a RayService the way a client behind its serve Service sends it.

The dev cluster has no kube-proxy, and no EndpointSlices: the API server refuses
loopback endpoint addresses, and every pod address here is loopback, so the
EndpointSlice controller is off (docs/dev-cluster.md; the vnode resolves Service
names for pods itself, from Services and pods). :func:`endpoints` therefore
makes the list the EndpointSlice controller would: the pods the Service's
selector picks that are Ready and not terminating, each at the Service port's
``targetPort`` (a number, or a name looked up in the pod's container ports).
:class:`Load` sends requests at a bounded rate for a bounded time, spread over
the endpoints, re-resolving them every ``resolve_every_s`` (0.5 s), and counts
what came back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod, Service


def endpoints(kube: Client, ns: str, service: str, port_name: str = "serve"
              ) -> list[tuple[str, int]]:
    """(pod IP, port) of every endpoint of ``service`` (see the module); [] when the
    Service does not exist (yet)."""
    try:
        svc = kube.get(Service, service, namespace=ns)
    except ApiError as exc:
        if exc.status.code == 404:
            return []
        raise
    assert svc.spec is not None
    selector = svc.spec.selector or {}
    ports = [p for p in svc.spec.ports or [] if p.name == port_name]
    if not selector or not ports:
        return []
    target = ports[0].targetPort if ports[0].targetPort is not None else ports[0].port
    out = []
    for pod in kube.list(Pod, namespace=ns, labels=selector):
        if pod.metadata is None or pod.metadata.deletionTimestamp or pod.status is None:
            continue
        ready = any(c.type == "Ready" and c.status == "True"
                    for c in pod.status.conditions or [])
        if not ready or not pod.status.podIP:
            continue
        number = target if isinstance(target, int) else _named_port(pod, str(target))
        if number is not None:
            out.append((pod.status.podIP, number))
    return sorted(out)


def _named_port(pod: Pod, name: str) -> int | None:
    assert pod.spec is not None
    for container in pod.spec.containers:
        for port in container.ports or []:
            if port.name == name:
                return int(port.containerPort)
    return None


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    no_endpoint: int = 0  # moments with no endpoint to send to (counted as failed too)
    errors: Counter[str] = field(default_factory=Counter)
    clusters: Counter[str] = field(default_factory=Counter)  # which cluster answered
    texts: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)  # text -> time first seen
    latencies: list[float] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)  # seconds after the start
    failed_at: list[float] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0

    def per_second(self, start_s: float, end_s: float) -> list[int]:
        """Answers in each whole second of [start_s, end_s)."""
        buckets = [0] * max(0, int(end_s - start_s))
        for at in self.answered_at:
            index = int(at - start_s)
            if 0 <= index < len(buckets):
                buckets[index] += 1
        return buckets


class Load:
    """Requests at ``rate`` per second, for at most ``max_s`` seconds or until stopped.

    Each request is a GET of ``path`` on one endpoint (round-robin over the latest
    resolution); an answer other than 200 with the app's JSON, a timeout or a
    refused connection is a failure, with its kind counted. ``threads`` senders
    share the rate, so a slow answer does not slow the others. ``rate`` 0: each
    sender sends its next request as soon as the last one is answered (a closed
    loop: what the service can take from ``threads`` clients)."""

    def __init__(self, resolve: Callable[[], list[tuple[str, int]]], rate: float = 20.0,
                 max_s: float = 300.0, path: str = "/?name=load", timeout_s: float = 5.0,
                 resolve_every_s: float = 0.5, threads: int = 4) -> None:
        self.resolve = resolve
        self.rate = rate
        self.max_s = max_s
        self.path = path
        self.timeout_s = timeout_s
        self.resolve_every_s = resolve_every_s
        self.threads = threads
        self.outcome = Outcome()
        self._targets: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._next = 0
        self._started = 0.0

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._targets = self.resolve()
        self._started = time.monotonic()
        self._workers = [threading.Thread(target=self._resolver, daemon=True)]
        self._workers += [threading.Thread(target=self._sender, args=(i,), daemon=True)
                          for i in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def stop(self) -> Outcome:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout_s + 5)
        self.outcome.seconds = time.monotonic() - self._started
        return self.outcome

    def elapsed(self) -> float:
        """Seconds since the load started (the time base of the outcome's records)."""
        return time.monotonic() - self._started

    def _done(self) -> bool:
        return self._stop.is_set() or time.monotonic() - self._started > self.max_s

    def _resolver(self) -> None:
        while not self._done():
            with contextlib.suppress(Exception):  # the API server busy: keep the last list
                found = self.resolve()
                with self._lock:
                    self._targets = found
            self._stop.wait(self.resolve_every_s)

    def _pick(self) -> tuple[str, int] | None:
        with self._lock:
            if not self._targets:
                return None
            self._next += 1
            return self._targets[self._next % len(self._targets)]

    def _sender(self, index: int) -> None:
        period = self.threads / self.rate if self.rate > 0 else 0.0
        due = self._started + index * period / self.threads
        with httpx.Client(timeout=self.timeout_s, trust_env=False) as http:
            while not self._done():
                now = time.monotonic()
                if now < due:
                    self._stop.wait(due - now)
                    continue
                due += period
                self._one(http)

    def _one(self, http: httpx.Client) -> None:
        target = self._pick()
        out = self.outcome
        with self._lock:
            out.sent += 1
        if target is None:
            with self._lock:
                out.failed += 1
                out.no_endpoint += 1
                out.errors["no endpoint"] += 1
                out.failed_at.append(time.monotonic() - self._started)
            if self.rate <= 0:
                self._stop.wait(0.05)  # closed loop with nowhere to send: not a busy loop
            return
        ip, port = target
        started = time.monotonic()
        try:
            got = http.get(f"http://{ip}:{port}{self.path}")
            body = got.json() if got.status_code == 200 else None
            if not isinstance(body, dict) or "text" not in body:
                raise ValueError(f"HTTP {got.status_code}: {got.text[:120]}")
        except Exception as exc:
            with self._lock:
                out.failed += 1
                out.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                out.failed_at.append(time.monotonic() - self._started)
            return
        with self._lock:
            out.ok += 1
            out.latencies.append(time.monotonic() - started)
            out.answered_at.append(time.monotonic() - self._started)
            out.clusters[str(body.get("cluster"))] += 1
            text = str(body["text"])
            out.texts[text] += 1
            out.first_seen.setdefault(text, time.monotonic() - self._started)
