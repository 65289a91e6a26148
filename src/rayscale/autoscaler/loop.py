"""The autoscaler loop: observe -> plan -> act, at once when Ray's demand changes.

State lives in the provider (what was launched) and in Ray (what registered),
never only in this process: a restarted loop lists the provider's nodes, joins
them with Ray's, and goes on without launching duplicates. What it keeps in
memory is only advisory (tracking.py): each node's lifecycle phase, which
nodes were already announced as registered, and per-group failure backoff.

One round (:meth:`Autoscaler.tick`): observe Ray and list the provider's
nodes; settle nodes that exited; join both into a snapshot (snapshot.py);
follow registrations and launch timeouts; build the planner's ClusterState
from the spec and the snapshot (typed, no JSON in between) and plan; act;
publish the status document and gauges (status.py).

When (:meth:`Autoscaler.run`): a round at least every ``tick_s`` (1 s), for
what time alone changes (idle and launch timeouts, the status document); and
between rounds, every ``probe_s`` (0.1 s), a look at Ray's demand and nodes
(:class:`ChangeProbe`: one GCS call compared with the last round's, a tenth of
a round's CPU) that starts a round at once when something changed. New demand
is acted on 0.1-0.2 s after Ray's GCS knows it, for less CPU than rounds every
0.25 s took (bench/reaction.py).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rayscale.api import RayCluster
from rayscale.autoscaler.events import EventLog, ScalingEvent
from rayscale.autoscaler.headwatch import HeadWatch
from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.autoscaler.providerwatch import ProviderWatch
from rayscale.autoscaler.snapshot import NodeView, Snapshot, cluster_state, join
from rayscale.autoscaler.status import limit_words, publish_gauges, status_document
from rayscale.autoscaler.tracking import GroupBackoff, NodeTracker
from rayscale.labels import HEAD_GROUP, UNBOUNDED_REPLICAS
from rayscale.observe.gcs_report import AutoscalingReport, FailedLaunch, NodeGroup, PendingNode
from rayscale.observe.ray_state import Observation
from rayscale.planner import Plan, plan
from rayscale.providers.base import (
    NodeProvider,
    ProviderNode,
    QuotaSource,
    RegistrationListener,
)

log = logging.getLogger(__name__)

# How long a node whose process exited stays hidden from Ray's view: longer than
# the GCS takes to mark it dead (its health checks), short enough to stay small.
GONE_MEMORY_S = 300.0
# Failed launches reported to Ray's GCS (``ray status``: "Recent failures").
FAILURE_MEMORY_S = 600.0
MAX_FAILURES_REPORTED = 20
# The autoscaling state is reported when it changes, and at least this often;
# the cluster config when it changes, and at least every CONFIG_REFRESH_S (a
# restarted GCS starts without one).
STATE_REFRESH_S = 5.0
CONFIG_REFRESH_S = 60.0
# A round that keeps failing the same way is reported once a minute, not 4 times a second.
ERROR_REPEAT_S = 60.0


class Observer(Protocol):
    def observe(self) -> Observation: ...

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]: ...


@runtime_checkable
class ChangeProbe(Protocol):
    """An observer that can tell cheaply whether demand or nodes changed since its
    last observation (RayObserver): the loop then runs a round at once."""

    def changed(self) -> bool: ...


@runtime_checkable
class Reporter(Protocol):
    """Tells Ray's GCS what Ray's own autoscaler would (observe/gcs_report.py)."""

    def report_cluster_config(self, groups: list[NodeGroup]) -> None: ...

    def report_autoscaling_state(self, report: AutoscalingReport, observed: int) -> None: ...


@dataclass(frozen=True)
class LoopOptions:
    # A full round at least this often (idle timeouts, launch timeouts, status) ...
    tick_s: float = 1.0
    # ... and between rounds, a look this often at whether demand or nodes changed
    # (ChangeProbe), which starts a round at once. A look costs a tenth of a round,
    # so new demand is acted on within ~probe_s for less CPU than 0.25 s rounds.
    probe_s: float = 0.1
    launch_timeout_s: float = 60.0  # a launch that has not registered by then failed
    backoff_s: float = 10.0  # first backoff after a failed launch; doubles, max 5 min
    drain_deadline_s: float = 30.0
    # Ray's demand dips for a moment while tasks move to new nodes: a pending node
    # is cancelled only after the planner found it unneeded for this long.
    pending_grace_s: float = 5.0
    # After a GCS outage (a restarted head), no launch and no stop until every live
    # node of ours re-registered, or for at most this long (headwatch.py).
    recovery_grace_s: float = 60.0
    recovery_settle_s: float = 10.0  # ... and at least this long


class Autoscaler:
    def __init__(
        self,
        spec: RayCluster,
        provider: NodeProvider,
        observer: Observer,
        head_ip: str,
        events: EventLog,
        metrics: AutoscalerMetrics | None = None,
        options: LoopOptions | None = None,
        memory_probe: Callable[[list[str]], dict[str, float]] | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        refresh_spec: Callable[[], RayCluster] | None = None,
        reporter: Reporter | None = None,
        before_round: Callable[[], str | None] | None = None,
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
        # local mode: restart a dead head (GCS fault tolerance) before observing; it
        # returns why the GCS cannot be used this round (None: it can)
        self.before_round = before_round
        self.head = HeadWatch(self.options.recovery_grace_s, self.options.recovery_settle_s)
        self.provider_watch = ProviderWatch()
        # the provider's running nodes that Ray did not show registered in the first
        # picture (None until then): a replaced head's sidecar holds for them
        self._found_running: set[str] | None = None
        # an observer that can also report (RayObserver) reports unless told otherwise
        self.reporter = reporter if reporter is not None else (
            observer if isinstance(observer, Reporter) else None
        )
        self.failures: list[FailedLaunch] = []
        self._shapes: dict[str, dict[str, float]] = {}  # group -> a Ray node's total, last seen
        self._reported_config: tuple[list[NodeGroup], float] | None = None
        self._reported_state: tuple[AutoscalingReport, float] | None = None
        self._report_failing = False
        self.tracker = NodeTracker(self.options.launch_timeout_s)
        self._gone: dict[str, float] = {}  # node id -> when its process was found exited
        self.backoff = GroupBackoff(self.options.backoff_s)
        self.infeasible_seen: list[str] = []
        self.last_plan: Plan | None = None
        self._limits: dict[str, str] = {}  # group -> the limit last announced
        self.last_snapshot: Snapshot | None = None
        # every group's series exist (at 0) from the start: dashboards see them at once
        self.metrics.know_groups(g.group_name for g in spec.worker_groups)
        self._stops = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rayscale-stop")
        self._stop = threading.Event()
        self._last_error: tuple[str, float] | None = None
        self._adopt()

    # --------------------------------------------------------------- lifecycle

    def _adopt(self) -> None:
        try:
            nodes = [n for n in self.provider.nodes() if n.state != "dead"]
        except Exception as exc:  # the first round says so (providerwatch.py)
            log.warning("listing the provider's nodes failed: %r", exc)
            return
        if nodes:
            self.events.add(ScalingEvent("adopt", f"adopted {len(nodes)} node(s) already running: "
                                  + ", ".join(n.id for n in nodes)))

    def run(self) -> None:
        probe = (self.observer if isinstance(self.observer, ChangeProbe)
                 and self.options.probe_s > 0 else None)
        next_round = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_round or (
                    probe is not None and self._probe_changed(probe)):
                started = time.monotonic()
                self._round(started)
                next_round = started + self.options.tick_s
            wait = next_round - time.monotonic()
            if probe is not None:
                wait = min(wait, self.options.probe_s)
            self._stop.wait(max(0.0, wait))

    def _round(self, started: float) -> None:
        try:
            self.tick()
        except Exception as exc:  # the loop must outlive a bad round
            log.exception("autoscaler round failed")
            self._round_failed(exc, started)
        self.metrics.loop_seconds.observe(time.monotonic() - started)

    def _probe_changed(self, probe: ChangeProbe) -> bool:
        """Whether to run a round now; a failing look waits for the regular round,
        which reports why (an unreachable GCS is not looked at ten times a second)."""
        try:
            changed = probe.changed()
        except Exception as exc:
            log.debug("looking for changes failed: %r", exc)
            return False
        if changed:
            self.metrics.change_rounds.inc()
        return changed

    def _round_failed(self, exc: Exception, now: float) -> None:
        """An event for a failed round: once per distinct error per minute, not per round."""
        message = f"round failed: {exc!r}"
        last = self._last_error
        if last is None or last[0] != message or now - last[1] >= ERROR_REPEAT_S:
            self.events.add(ScalingEvent("error", message))
            self._last_error = (message, now)

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
            try:
                self.spec = self.refresh_spec()
            except Exception as exc:
                return self._provider_unreadable(exc)
        if self.before_round is not None:
            why = self.before_round()
            if why is not None:
                return self._unreachable(why)
        try:
            observation = self.observer.observe()
        except Exception as exc:
            log.warning("observing Ray failed: %r", exc)
            return self._unreachable(type(exc).__name__)
        try:
            provider_nodes = self.provider.nodes()
            quotas = self.provider.quotas() if isinstance(self.provider, QuotaSource) else None
        except Exception as exc:
            return self._provider_unreadable(exc)
        now = time.time()
        self._provider_answered(now)
        self._settle_dead(provider_nodes, now)
        memory = self._memory(observation)
        snapshot = join(provider_nodes, observation, self.head_ip, memory, gone=self._gone)
        self._watch_head(snapshot, provider_nodes, now)
        self._follow(snapshot, provider_nodes, now)
        if not self.head.holding:
            self._stop_suspended(snapshot, now)

        not_launchable = self.backoff.blocked(now)
        state = cluster_state(self.spec, snapshot, not_launchable, quotas)
        started = time.perf_counter()
        decision = plan(state)
        self.metrics.plan_seconds.observe(time.perf_counter() - started)

        if self.head.holding:
            self.metrics.held_rounds.labels("recovering").inc()
        else:
            self._act(decision, snapshot, now)
        self._report(snapshot, decision, now)
        self._announce_limits(decision)
        self.last_plan = decision
        self.last_snapshot = snapshot
        publish_gauges(self.metrics, self.spec, snapshot, decision, not_launchable)
        if self.on_status is not None:
            self.on_status(self.status(snapshot, decision))
        return decision

    def _announce_limits(self, decision: Plan) -> None:
        """An event when a group starts to hold back capped demand, or by another limit
        (once per change, not every round)."""
        capped = decision.capped.counts()
        what = ", ".join(f"{n} {kind}" for kind, n in capped.items() if n) or "demand"
        for group, limit in decision.limited.items():
            if self._limits.get(group) != limit:
                self.events.add(ScalingEvent(
                    "capped", f"{group} launches no more for capped demand ({what}): "
                    f"{limit_words(limit)}", group, reason=limit))
        self._limits = dict(decision.limited)

    def status(self, snapshot: Snapshot, decision: Plan) -> dict[str, Any]:
        """The status document (`rayscale status`) for a round."""
        not_launchable = self.backoff.blocked(time.time())
        doc = status_document(self.spec, snapshot, decision, not_launchable, self.events.recent)
        doc["gcs"] = {"state": self.head.state, "since": self.head.since,
                      "outages": self.head.outages}
        doc["provider"] = {"state": "down" if self.provider_watch.down else "up",
                           "since": self.provider_watch.down_since,
                           "outages": self.provider_watch.outages}
        return doc

    # ------------------------------------------------------ head outages

    def _unreachable(self, why: str) -> Plan:
        """A round without the GCS: nothing launched, nothing stopped, nothing timed out.

        The status document of the last good round is published again (marked
        with the outage), so `rayscale status` sees a live autoscaler.
        """
        now = time.time()
        change = self.head.unreachable(now, why)
        self.metrics.gcs_reachable.set(0)
        self.metrics.holding.set(1)
        self.metrics.held_rounds.labels("gcs_unreachable").inc()
        if change is not None:
            self.metrics.gcs_outages.inc()
            self.events.add(ScalingEvent(change.kind, change.message))
        decision = self.last_plan or Plan()
        if self.on_status is not None and self.last_snapshot is not None:
            self.on_status(self.status(self.last_snapshot, decision))
        return decision

    def _provider_unreadable(self, exc: Exception) -> Plan:
        """A round without the provider's nodes: nothing launched, nothing stopped.

        Its picture of launches in flight is gone, so acting on the last one
        could launch twice or stop a node that now works (providerwatch.py).
        """
        why = f"{type(exc).__name__}: {exc}"[:300]
        change = self.provider_watch.failed(time.time(), why)
        self.metrics.provider_reachable.set(0)
        self.metrics.holding.set(1)
        self.metrics.held_rounds.labels("provider_unreachable").inc()
        if change is not None:
            log.warning("%s", change.message)
            self.metrics.provider_outages.inc()
            self.events.add(ScalingEvent(change.kind, change.message))
        decision = self.last_plan or Plan()
        if self.on_status is not None and self.last_snapshot is not None:
            self.on_status(self.status(self.last_snapshot, decision))
        return decision

    def _provider_answered(self, now: float) -> None:
        self.metrics.provider_reachable.set(1)
        change = self.provider_watch.answered(now)
        if change is not None:
            log.info("%s", change.message)
            self.events.add(ScalingEvent(change.kind, change.message))

    def _watch_head(self, snapshot: Snapshot, provider_nodes: list[ProviderNode],
                    now: float) -> None:
        """The GCS answered: after an outage, hold until our live nodes re-registered."""
        self.metrics.gcs_reachable.set(1)
        registered = {v.id for v in snapshot.nodes if v.status != "pending"}
        if self._found_running is None:  # the first picture: nodes running, unregistered?
            self._found_running = {p.id for p in provider_nodes
                                   if p.state == "started" and p.id not in registered}
            if self._found_running:
                start = self.head.starting(now, len(self._found_running))
                self.events.add(ScalingEvent(start.kind, start.message))
        if not self.head.holding:
            return
        unregistered = 0
        for p in provider_nodes:
            tracked = self.tracker.get(p.id)
            known = p.id in self._found_running or (tracked is not None and tracked.registered)
            # ours, alive, known to Ray before the outage, not (yet) registered again
            if p.state == "started" and p.id not in registered and known:
                unregistered += 1
        change = self.head.reachable(now, unregistered)
        if change is not None:
            self.events.add(ScalingEvent(change.kind, change.message))
        self.metrics.holding.set(1 if self.head.holding else 0)

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

    def _settle_dead(self, provider_nodes: list[ProviderNode], now: float) -> None:
        """Processes that exited: a failed launch if they never registered."""
        self._gone = {k: t for k, t in self._gone.items() if now - t < GONE_MEMORY_S}
        for node in provider_nodes:
            if node.state != "dead" or self.tracker.stop_under_way(node.id):
                continue
            self._gone[node.id] = now
            was = self.tracker.exited(node.id)
            if was is not None and was.phase == "stopping":
                pass  # our stop has returned: the exit was ours
            elif was is not None and was.registered:
                self.events.add(ScalingEvent("lost", f"node {node.id} exited", node.group, node.id))
            else:
                self._launch_failed(node.group, node.id,
                                    node.reason or "process exited before registering", now,
                                    node.launched_at)
            self.provider.forget(node.id)

    def _follow(self, snapshot: Snapshot, provider_nodes: list[ProviderNode], now: float) -> None:
        """Announce registrations; a launch that did not register in time failed."""
        observed = self.tracker.observe(snapshot.nodes, {p.id for p in provider_nodes}, now)
        for view in observed.registered:
            took = now - view.launched_at if view.launched_at else None
            self.backoff.succeeded(view.group)
            if isinstance(self.provider, RegistrationListener):
                self.provider.registered(view.id)
            self.events.add(ScalingEvent(
                "registered",
                f"node {view.id} registered with Ray"
                + (f" {took:.1f}s after launch" if took is not None else ""),
                view.group, view.id,
            ))
        for view in observed.timed_out:
            if self.head.holding:
                continue  # a node of ours re-registering after an outage, not a failed launch
            self._launch_failed(view.group, view.id, "did not register in time", now,
                                view.launched_at)
            self._stop_node(view, "launch_failed", now)

    def _launch_failed(
        self, group: str, node_id: str, why: str, now: float, launched_at: float | None
    ) -> None:
        self.metrics.failed_launches.labels(group).inc()
        self.failures.append(FailedLaunch(group, node_id, why, launched_at, now))
        self.events.add(ScalingEvent("launch_failed", f"node {node_id}: {why}", group, node_id))
        delay = self.backoff.failed(group, now)
        if delay is not None:
            self.metrics.backoffs.labels(group).inc()
            self.events.add(ScalingEvent(
                "backoff", f"group {group} not launchable for {delay:.0f}s; demand falls "
                "through to the next group by priority", group,
            ))

    def _stop_suspended(self, snapshot: Snapshot, now: float) -> None:
        suspended = {g.group_name for g in self.spec.worker_groups if g.suspend}
        for view in snapshot.nodes:
            if view.group in suspended and view.status != "terminating":
                self._stop_node(view, "suspended", now)

    # --------------------------------------------------------------------- act

    def _act(self, decision: Plan, snapshot: Snapshot, now: float) -> None:
        for group, count in decision.launch.items():
            ids = self.provider.launch(group, count)
            reasons = decision.why.get(group, [])
            # counted once, under the first reason (min, floor, gangs, tasks, memory)
            self.metrics.launches.labels(group, reasons[0] if reasons else "demand").inc(count)
            self.events.add(ScalingEvent(
                "launch", f"launched {count} x {group} ({', '.join(ids)}) for "
                + ", ".join(reasons), group, reason=",".join(reasons),
            ))
        by_id = {v.id: v for v in snapshot.nodes}
        unneeded = {t.id for t in decision.terminate if t.reason == "unneeded_pending"}
        due = self.tracker.unneeded_for(unneeded, now, self.options.pending_grace_s)
        for term in decision.terminate:
            view = by_id.get(term.id)
            if view is None or (term.reason == "unneeded_pending" and term.id not in due):
                continue
            self._stop_node(view, term.reason, now)
        self._report_infeasible(decision)

    def _report_infeasible(self, decision: Plan) -> None:
        """Say once (not every round) when demand appears that no group can ever hold."""
        infeasible = decision.infeasible.to_dict()
        # the demand as the plan reports it, less its count: resources (or bundles) and
        # any label selectors (a selector no group matches is as infeasible as a size)
        shapes = sorted(
            json.dumps({k: v for k, v in e.items() if k != "count"}, sort_keys=True)
            for kind in ("tasks", "gangs", "floor")
            for e in infeasible[kind]
        )
        if shapes and shapes != self.infeasible_seen:
            self.events.add(ScalingEvent(
                "infeasible", "no worker group can ever hold: " + "; ".join(shapes)
            ))
        self.infeasible_seen = shapes

    # ------------------------------------------------------------- report

    def node_groups(self, snapshot: Snapshot) -> list[NodeGroup]:
        """The cluster config Ray's libraries read: the head, then every worker group.

        A group's resources are the spec's, completed by what its Ray nodes
        reported once one ran (Ray adds an object store and memory the spec may
        not name); the head's are what its Ray node reports (Ray Data compares
        them to tell the head's group from a worker shape). A suspended group
        can have no node.
        """
        for view in snapshot.nodes:
            if view.status == "running" and view.total:
                self._shapes[view.group] = {
                    k: v for k, v in view.total.items() if not k.startswith("node:")
                }
        groups = [NodeGroup(
            HEAD_GROUP, self._shapes.get(HEAD_GROUP) or self.spec.head.ray_resources, 1, 1
        )]
        for g in self.spec.worker_groups:
            bound = None if g.max_replicas >= UNBOUNDED_REPLICAS else g.max_replicas
            groups.append(NodeGroup(
                g.group_name, {**self._shapes.get(g.group_name, {}), **g.ray_resources},
                0 if g.suspend else g.min_replicas, 0 if g.suspend else bound,
            ))
        return groups

    def autoscaling_report(self, snapshot: Snapshot, decision: Plan, now: float
                           ) -> AutoscalingReport:
        """What is pending, what failed lately and what no group can ever hold."""
        self.failures = [f for f in self.failures if now - f.failed_at < FAILURE_MEMORY_S][
            -MAX_FAILURES_REPORTED:
        ]
        pending = tuple(
            PendingNode(v.id, v.group, v.ip, v.launched_at)
            for v in snapshot.nodes if v.scalable and v.status == "pending"
        )
        return AutoscalingReport(pending, tuple(self.failures), decision.infeasible)

    def _report(self, snapshot: Snapshot, decision: Plan, now: float) -> None:
        """Tell Ray's GCS the cluster config and the autoscaling state, as Ray's autoscaler does.

        Each is sent when it changed, and now and then anyway. A failure is
        logged (once until it works again) and never stops the round.
        """
        if self.reporter is None:
            return
        try:
            groups = self.node_groups(snapshot)
            last = self._reported_config
            if last is None or last[0] != groups or now - last[1] >= CONFIG_REFRESH_S:
                self.reporter.report_cluster_config(groups)
                self._reported_config = (groups, now)
            report = self.autoscaling_report(snapshot, decision, now)
            previous = self._reported_state
            if previous is None or previous[0] != report or now - previous[1] >= STATE_REFRESH_S:
                self.reporter.report_autoscaling_state(report, snapshot.observation.version)
                self._reported_state = (report, now)
            self._report_failing = False
        except Exception as exc:
            if not self._report_failing:
                log.warning("reporting to Ray's GCS failed: %r", exc)
            self._report_failing = True

    def _stop_node(self, view: NodeView, reason: str, now: float) -> None:
        """Drain (if it registered) then stop, on the pool; Ray may refuse the drain."""
        if self.tracker.stop_under_way(view.id):
            return
        if self.tracker.phase(view.id) == "running":
            assert view.ray_node_id is not None
            accepted, why = self.observer.drain(
                view.ray_node_id, self.options.drain_deadline_s, f"rayscale: {reason}"
            )
            if not accepted:
                self.metrics.drain_rejections.labels(view.group).inc()
                self.events.add(ScalingEvent(
                    "drain_rejected", f"Ray refused to drain {view.id} ({why or 'busy'}); "
                    "it stays", view.group, view.id, reason,
                ))
                return
            self.tracker.drained(view.id, now)
            self.events.add(
                ScalingEvent("drain", f"drained {view.id}", view.group, view.id, reason)
            )
        self.tracker.stopping(
            view.id, lambda: self._stops.submit(self.provider.terminate, view.id), now
        )
        self.metrics.terminations.labels(view.group, reason).inc()
        self.events.add(ScalingEvent("stop", f"stopping {view.id} ({reason})", view.group, view.id,
                              reason))
