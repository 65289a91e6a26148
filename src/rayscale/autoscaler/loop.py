"""The autoscaler loop: observe -> plan -> act, a few times a second.

State lives in the provider (what was launched) and in Ray (what registered),
never only in this process: a restarted loop lists the provider's nodes, joins
them with Ray's, and goes on without launching duplicates. What it keeps in
memory is only advisory: per-group failure backoff and which nodes it has
already announced as registered.

Stopping a node is drain-then-stop: Ray's GCS must accept an idle-termination
drain first (it refuses for a node that got work in the meantime, and the node
stays); only then is the process stopped. Stops run on a small thread pool so
the loop keeps reacting to demand while a node shuts down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from rayscale.autoscaler.events import Event, EventLog
from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.autoscaler.snapshot import NodeView, Snapshot, cluster_state, join
from rayscale.observe.ray_state import Observation
from rayscale.planner import Plan, plan
from rayscale.providers.base import NodeProvider, ProviderNode
from rayscale.spec import ClusterSpec

log = logging.getLogger(__name__)


class Observer(Protocol):
    def observe(self) -> Observation: ...

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class LoopOptions:
    tick_s: float = 0.25
    launch_timeout_s: float = 60.0  # a launch that has not registered by then failed
    backoff_s: float = 10.0  # first backoff after a failed launch; doubles, max 5 min
    drain_deadline_s: float = 30.0
    # Ray's demand dips for a moment while tasks move to new nodes: a pending node
    # is cancelled only after the planner found it unneeded for this long.
    pending_grace_s: float = 5.0


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0


@dataclass
class LoopState:
    """Advisory, in-memory only; everything else is rebuilt from provider + Ray."""

    backoff: dict[str, _Backoff] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)
    stopping: dict[str, Future[None]] = field(default_factory=dict)
    unneeded_since: dict[str, float] = field(default_factory=dict)
    infeasible_seen: list[str] = field(default_factory=list)
    last_plan: Plan | None = None
    last_snapshot: Snapshot | None = None


class Autoscaler:
    def __init__(
        self,
        spec: ClusterSpec,
        provider: NodeProvider,
        observer: Observer,
        head_ip: str,
        events: EventLog,
        metrics: AutoscalerMetrics | None = None,
        options: LoopOptions | None = None,
        memory_probe: Callable[[list[str]], dict[str, float]] | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        refresh_spec: Callable[[], ClusterSpec] | None = None,
    ) -> None:
        self.spec = spec
        self.provider = provider
        self.observer = observer
        self.head_ip = head_ip
        self.events = events
        self.metrics = metrics or AutoscalerMetrics()
        self.options = options or LoopOptions()
        self.memory_probe = memory_probe
        self.on_status = on_status
        self.refresh_spec = refresh_spec  # Kubernetes: the CR may change at any time
        self.state = LoopState()
        self._stops = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rayscale-stop")
        self._stop = threading.Event()
        self._adopt()

    # --------------------------------------------------------------- lifecycle

    def _adopt(self) -> None:
        nodes = [n for n in self.provider.nodes() if n.state != "dead"]
        if nodes:
            self.events.add(Event("adopt", f"adopted {len(nodes)} node(s) already running: "
                                  + ", ".join(n.id for n in nodes)))

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception as exc:  # the loop must outlive a bad round
                log.exception("autoscaler round failed")
                self.events.add(Event("error", f"round failed: {exc!r}"))
            spent = time.monotonic() - started
            self.metrics.loop_seconds.observe(spent)
            self._stop.wait(max(0.0, self.options.tick_s - spent))

    def request_stop(self) -> None:
        """Make `run` return after the current round (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the loop and wait for node stops already under way."""
        self._stop.set()
        self._stops.shutdown(wait=True)

    # ------------------------------------------------------------------ a round

    def tick(self) -> Plan:
        if self.refresh_spec is not None:
            self.spec = self.refresh_spec()
        observation = self.observer.observe()
        provider_nodes = self.provider.nodes()
        self._settle_dead(provider_nodes, observation)
        memory = self._memory(observation)
        snapshot = join(provider_nodes, observation, self.head_ip, memory)
        self._watch_launches(snapshot)
        self._stop_suspended(snapshot)

        state = cluster_state(self.spec, snapshot, self._not_launchable())
        started = time.perf_counter()
        decision = plan(state)
        self.metrics.plan_seconds.observe(time.perf_counter() - started)

        self._act(decision, snapshot)
        self.state.last_plan = decision
        self.state.last_snapshot = snapshot
        self._publish(snapshot, decision)
        return decision

    def _not_launchable(self) -> set[str]:
        now = time.time()
        out = set()
        for group, b in self.state.backoff.items():
            backing_off = b.until > now
            self.metrics.backoff.labels(group).set(1 if backing_off else 0)
            if backing_off:
                out.add(group)
        return out

    def _memory(self, observation: Observation) -> dict[str, float]:
        if self.memory_probe is None:
            return {}
        if not any(g.memory_target_fraction for g in self.spec.worker_groups):
            return {}
        try:
            return self.memory_probe([n.node_id for n in observation.alive()])
        except Exception as exc:
            log.warning("memory probe failed: %r", exc)
            return {}

    # ------------------------------------------------------- launch tracking

    def _settle_dead(self, provider_nodes: list[ProviderNode], observation: Observation) -> None:
        """Processes that exited: a failed launch if they never registered."""
        for node in provider_nodes:
            if node.state != "dead" or node.id in self.state.stopping:
                continue
            if node.id in self.state.announced:
                self.events.add(Event("lost", f"node {node.id} exited", node.group, node.id))
            else:
                self._launch_failed(node.group, node.id, "process exited before registering")
            self.provider.forget(node.id)

    def _watch_launches(self, snapshot: Snapshot) -> None:
        now = time.time()
        for view in snapshot.nodes:
            if not view.scalable or view.id in self.state.stopping:
                continue
            if view.status == "running" and view.id not in self.state.announced:
                self.state.announced.add(view.id)
                took = now - view.launched_at if view.launched_at else None
                self.state.backoff.pop(view.group, None)
                self.events.add(Event(
                    "registered",
                    f"node {view.id} registered with Ray"
                    + (f" {took:.1f}s after launch" if took is not None else ""),
                    view.group, view.id,
                ))
            elif (
                view.status == "pending"
                and view.launched_at is not None
                and now - view.launched_at > self.options.launch_timeout_s
            ):
                self._launch_failed(view.group, view.id, "did not register in time")
                self._stop_async(view, "launch_failed", drain=False)

    def _launch_failed(self, group: str, node_id: str, why: str) -> None:
        self.metrics.failed_launches.labels(group).inc()
        self.events.add(Event("launch_failed", f"node {node_id}: {why}", group, node_id))
        b = self.state.backoff.setdefault(group, _Backoff())
        if b.until > time.time():
            return  # the same outage: nodes of one batch fail together
        b.failures += 1
        delay = min(300.0, self.options.backoff_s * 2 ** (b.failures - 1))
        b.until = time.time() + delay
        self.events.add(Event(
            "backoff", f"group {group} not launchable for {delay:.0f}s; demand falls through "
            "to the next group by priority", group,
        ))

    def _stop_suspended(self, snapshot: Snapshot) -> None:
        suspended = {g.name for g in self.spec.worker_groups if g.suspend}
        for view in snapshot.nodes:
            if view.group in suspended and view.status != "terminating":
                self._stop_async(view, "suspended", drain=view.status == "running")

    # --------------------------------------------------------------------- act

    def _act(self, decision: Plan, snapshot: Snapshot) -> None:
        for group, count in decision.launch.items():
            ids = self.provider.launch(group, count)
            reasons = decision.why.get(group, [])
            # counted once, under the first reason (min, floor, gangs, tasks, memory)
            self.metrics.launches.labels(group, reasons[0] if reasons else "demand").inc(count)
            self.events.add(Event(
                "launch", f"launched {count} x {group} ({', '.join(ids)}) for "
                + ", ".join(reasons), group, reason=",".join(reasons),
            ))
        by_id = {v.id: v for v in snapshot.nodes}
        now = time.time()
        unneeded = {t.id for t in decision.terminate if t.reason == "unneeded_pending"}
        since = self.state.unneeded_since
        for node_id in list(since):
            if node_id not in unneeded:
                del since[node_id]
        for term in decision.terminate:
            view = by_id.get(term.id)
            if view is None:
                continue
            if term.reason == "unneeded_pending":
                first = since.setdefault(term.id, now)
                if now - first < self.options.pending_grace_s:
                    continue
            self._stop_async(view, term.reason, drain=view.status == "running")
        for kind, count in decision.infeasible.counts().items():
            self.metrics.infeasible_demand.labels(kind).set(count)
        self._report_infeasible(decision)

    def _report_infeasible(self, decision: Plan) -> None:
        """Say once (not every round) when demand appears that no group can ever hold."""
        infeasible = decision.infeasible.to_dict()
        shapes = sorted(
            json.dumps(e.get("resources") or e.get("bundles"), sort_keys=True)
            for kind in ("tasks", "gangs", "floor")
            for e in infeasible[kind]
        )
        if shapes and shapes != self.state.infeasible_seen:
            self.events.add(Event(
                "infeasible", "no worker group can ever hold: " + "; ".join(shapes)
            ))
        self.state.infeasible_seen = shapes

    def _stop_async(self, view: NodeView, reason: str, drain: bool) -> None:
        if view.id in self.state.stopping:
            return
        if drain:
            assert view.ray_node_id is not None
            accepted, why = self.observer.drain(
                view.ray_node_id, self.options.drain_deadline_s, f"rayscale: {reason}"
            )
            if not accepted:
                self.metrics.drain_rejections.labels(view.group).inc()
                self.events.add(Event(
                    "drain_rejected", f"Ray refused to drain {view.id} ({why or 'busy'}); "
                    "it stays", view.group, view.id, reason,
                ))
                return
            self.events.add(Event("drain", f"drained {view.id}", view.group, view.id, reason))

        def stop() -> None:
            self.provider.terminate(view.id)

        future = self._stops.submit(stop)
        self.state.stopping[view.id] = future
        future.add_done_callback(lambda _: self.state.stopping.pop(view.id, None))
        self.metrics.terminations.labels(view.group, reason).inc()
        self.events.add(Event("stop", f"stopping {view.id} ({reason})", view.group, view.id,
                              reason))

    # ------------------------------------------------------------------ status

    def _publish(self, snapshot: Snapshot, decision: Plan) -> None:
        counts: dict[tuple[str, str], int] = {}
        for view in snapshot.nodes:
            if view.scalable:
                key = (view.group, view.status)
                counts[key] = counts.get(key, 0) + 1
        for g in self.spec.worker_groups:
            for status in ("running", "pending", "terminating"):
                self.metrics.nodes.labels(g.name, status).set(counts.get((g.name, status), 0))
        obs = snapshot.observation
        self.metrics.pending_demand.labels("tasks").set(sum(s.count for s in obs.tasks))
        self.metrics.pending_demand.labels("gangs").set(sum(g.count for g in obs.gangs))
        self.metrics.pending_demand.labels("floor").set(sum(s.count for s in obs.floor))
        if self.on_status is not None:
            self.on_status(self.status(snapshot, decision))

    def status(self, snapshot: Snapshot, decision: Plan) -> dict[str, Any]:
        not_launchable = self._not_launchable()
        groups = {}
        for g in self.spec.worker_groups:
            views = snapshot.of_group(g.name)
            groups[g.name] = {
                "running": sum(1 for v in views if v.status == "running"),
                "pending": sum(1 for v in views if v.status == "pending"),
                "terminating": sum(1 for v in views if v.status == "terminating"),
                "idle": sum(1 for v in views if v.status == "running" and (v.idle_s or 0.0) > 0),
                "min": g.min_replicas,
                "max": g.max_replicas,
                "launchable": g.name not in not_launchable,
                "resources": dict(g.resources),
            }
        total: dict[str, float] = {}
        available: dict[str, float] = {}
        for view in snapshot.nodes:
            if view.status == "running":
                for k, v in (view.total or {}).items():
                    total[k] = total.get(k, 0.0) + v
                for k, v in (view.available or {}).items():
                    available[k] = available.get(k, 0.0) + v
        obs = snapshot.observation
        return {
            "updated_at": time.time(),
            "groups": groups,
            "nodes": [v.to_dict() for v in snapshot.nodes],
            "usage": {k: {"used": total[k] - available.get(k, 0.0), "total": total[k]}
                      for k in sorted(total)},
            "demand": {
                "tasks": [{"resources": s.resources, "count": s.count} for s in obs.tasks],
                "gangs": [{"strategy": g.strategy, "bundles": g.bundles, "count": g.count}
                          for g in obs.gangs],
                "floor": [{"resources": s.resources, "count": s.count} for s in obs.floor],
            },
            "plan": decision.to_dict(),
            "events": [e.to_dict() for e in list(self.events.recent)[-30:]],
        }
