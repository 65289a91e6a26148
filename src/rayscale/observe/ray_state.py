"""Read a live Ray cluster through its GCS: nodes, idle times, pending demand, floors.

One call to ``ray.autoscaler.v2.sdk.get_cluster_resource_state`` gives all of
it; :func:`observation` turns that reply into an :class:`Observation` whose
demand is already the planner's own types (:class:`~rayscale.planner.state.Shape`
and :class:`~rayscale.planner.state.Gang`), so the autoscaler hands it to the
planner as it is. This is the one place where identical shapes are merged: Ray
reports one entry per scheduling class, and many classes share a shape.

Label selectors, as Ray 2.60's GCS reports them (checked on a live cluster):
a pending request's ``label_selectors`` is its ``label_selector`` followed by
the selectors of its ``fallback_strategy``, in order (a task without one
reports one *empty* selector; a ``request_resources`` floor without one,
none); each is a list of ``label_constraints`` (``label_key``, operator
``LABEL_OPERATOR_IN`` / ``NOT_IN``, ``label_values``). A placement group's
bundles with their selectors are in ``bundle_selectors[0].resource_requests``
(the legacy ``requests`` repeat the bundles without selectors); a bundle
without a selector has none. They become the planner's selectors in Ray's own
syntax (``"v"``, ``"!v"``, ``"in(a,b)"``, ``"!in(a,b)"``), and two shapes
merge only when their selectors are the same too.

Amounts Ray reports are doubles from a protobuf map; only finite positive
ones are kept (a missing resource means 0 in plan-format.md), so every value
satisfies the planner's model by construction and building the models here
is the first and only check they get.

Ray is imported lazily so that modules depending on this one (the CLI) stay
light until they really talk to a cluster.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from rayscale.observe.gcs_report import (
    AutoscalingReport,
    NodeGroup,
    autoscaling_state,
    cluster_config,
)
from rayscale.planner.selectors import Condition, condition_text, key_error, parse_condition
from rayscale.planner.state import MAX_AMOUNT, FallbackOption, Gang, GangStrategy, Shape

RayNodeStatus = Literal["running", "idle", "draining", "dead"]
_STATUS: dict[str, RayNodeStatus] = {
    "RUNNING": "running", "IDLE": "idle", "DRAINING": "draining", "DEAD": "dead",
}


@dataclass(frozen=True)
class RayNode:
    node_id: str  # hex
    ip: str
    status: RayNodeStatus
    idle_s: float
    total: dict[str, float]
    available: dict[str, float]
    labels: dict[str, str]


@dataclass(frozen=True)
class Observation:
    """One moment of a Ray cluster; demand with identical shapes merged."""

    nodes: list[RayNode]
    tasks: list[Shape] = field(default_factory=list)
    gangs: list[Gang] = field(default_factory=list)
    floor: list[Shape] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)
    #: Ray's ``cluster_resource_state_version`` of the reply (0: unknown).
    version: int = 0

    def alive(self) -> list[RayNode]:
        return [n for n in self.nodes if n.status != "dead"]


# One observation (or report, or drain) may take this long: without a deadline,
# Ray's GCS client waits for a GCS that is gone until its reconnect timeout, and
# a call in flight when the GCS died may never return: the loop would wait too.
OBSERVE_TIMEOUT_S = 10.0


class GcsCallPending(RuntimeError):
    """The previous call of this kind to the GCS has not returned yet."""


def _bounded(calls: dict[str, Future[Any]], runners: dict[str, ThreadPoolExecutor], kind: str,
             fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on a thread of its kind, waited for at most OBSERVE_TIMEOUT_S.

    A call that does not return in time is left running (a C++ call cannot be
    cancelled); until it returns, the next call of the same kind is refused
    (GcsCallPending), so stuck calls never pile up. Each kind keeps one thread
    (a new thread per call cost more than the call at several calls a second).
    """
    previous = calls.get(kind)
    if previous is not None and not previous.done():
        raise GcsCallPending(f"the previous {kind} call to the GCS has not returned")
    runner = runners.get(kind)
    if runner is None:
        runner = runners[kind] = ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix=f"gcs-{kind}")
    future: Future[Any] = runner.submit(fn, *args)
    calls[kind] = future
    return future.result(timeout=OBSERVE_TIMEOUT_S)


class RayObserver:
    """Observations of one Ray cluster, by its GCS address (``ip:port``)."""

    def __init__(self, gcs_address: str) -> None:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        self.gcs_address = gcs_address
        self.gcs = GcsClient(address=gcs_address)
        self._version = 0
        self._calls: dict[str, Future[Any]] = {}
        self._runners: dict[str, ThreadPoolExecutor] = {}
        # the change_key of the last observation, for changed()
        self._observed: tuple[tuple[bytes, ...], ...] | None = None

    def _state(self, kind: str) -> Any:
        from ray.core.generated.autoscaler_pb2 import GetClusterResourceStateReply

        reply = GetClusterResourceStateReply()
        reply.ParseFromString(_bounded(self._calls, self._runners, kind,
                                       self.gcs.get_cluster_resource_state, OBSERVE_TIMEOUT_S))
        return reply.cluster_resource_state

    def observe(self) -> Observation:
        """Ray's ``get_cluster_resource_state`` (autoscaler v2 SDK), with a deadline."""
        state = self._state("observe")
        self._observed = change_key(state)
        return observation(state)

    def changed(self) -> bool:
        """Whether Ray's demand or nodes changed since the last :meth:`observe`.

        A cheap look (one GCS call, nothing parsed into models) that the loop
        takes between its rounds, to act on new demand at once (loop.py).
        """
        return change_key(self._state("observe")) != self._observed

    def report_cluster_config(self, groups: Iterable[NodeGroup]) -> None:
        """Publish the node groups as Ray's autoscaler does (``ReportClusterConfig``)."""
        _bounded(self._calls, self._runners, "config", self.gcs.report_cluster_config,
                 cluster_config(groups).SerializeToString())

    def report_autoscaling_state(self, report: AutoscalingReport, observed: int) -> None:
        """Publish pending, failed and infeasible (``ReportAutoscalingState``).

        ``observed``: the cluster resource state version the report answers.
        The GCS keeps the report with the highest version; versions are
        wall-clock milliseconds, so a restarted autoscaler's reports are not
        taken for old ones.
        """
        self._version = max(self._version + 1, int(time.time() * 1000))
        message = autoscaling_state(report, self._version, observed)
        _bounded(self._calls, self._runners, "state", self.gcs.report_autoscaling_state,
                 message.SerializeToString(), OBSERVE_TIMEOUT_S)

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]:
        """Ask the GCS to drain an idle node; Ray refuses if the node is busy."""
        from ray.core.generated import autoscaler_pb2

        reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION")
        deadline_ms = int((time.time() + deadline_s) * 1000)
        accepted, rejection = _bounded(self._calls, self._runners, "drain", self.gcs.drain_node,
                                       node_id, reason, message, deadline_ms, OBSERVE_TIMEOUT_S)
        return bool(accepted), str(rejection or "")


def change_key(state: Any) -> tuple[tuple[bytes, ...], ...]:
    """What a round must act on at once: the demand (pending requests, gangs,
    ``request_resources`` floors) and the nodes (each one's id, and whether it
    is alive, draining or dead).

    Left out on purpose: idle times, available resources and running versus
    idle, which change with every task; the loop's regular rounds follow them
    (idle timeouts are seconds long).
    """
    from ray.core.generated import autoscaler_pb2

    alive = (autoscaler_pb2.NodeStatus.Value("RUNNING"), autoscaler_pb2.NodeStatus.Value("IDLE"))
    return (
        tuple(r.SerializeToString(deterministic=True) for r in state.pending_resource_requests),
        tuple(g.SerializeToString(deterministic=True)
              for g in state.pending_gang_resource_requests),
        tuple(c.SerializeToString(deterministic=True)
              for c in state.cluster_resource_constraints),
        tuple(n.node_id + (b"alive" if n.status in alive else bytes([n.status]))
              for n in state.node_states),
    )


def observation(state: Any) -> Observation:
    """An Observation from a ``ClusterResourceState`` (Ray's ``autoscaler.proto``)."""
    from ray.core.generated import autoscaler_pb2

    names = autoscaler_pb2.NodeStatus.Name
    return Observation(
        nodes=[_node(n, _STATUS.get(names(n.status), "dead")) for n in state.node_states],
        tasks=_shapes(
            (r.request, int(r.count)) for r in state.pending_resource_requests
        ),
        gangs=_gangs(state.pending_gang_resource_requests),
        floor=_shapes(
            (r.request, int(r.count))
            for c in state.cluster_resource_constraints
            for r in c.resource_requests
        ),
        version=int(state.cluster_resource_state_version),
    )


def _resources(bundle: Any) -> dict[str, float]:
    """A resource map without zero (= missing), negative or non-finite amounts.

    Amounts are at most the planner's MAX_AMOUNT, the most Ray's fixed point
    holds: only an overflow inside Ray could report more (a task asking for
    more than 9.2e14 CPUs), and no node can hold either.
    """
    return {k: min(v, MAX_AMOUNT) for k, v in bundle.items() if 0.0 < v < math.inf}  # NaN: False


def _node(n: Any, status: RayNodeStatus) -> RayNode:
    return RayNode(
        node_id=n.node_id.hex(),
        ip=n.node_ip_address,
        status=status,
        idle_s=n.idle_duration_ms / 1000.0 if status == "idle" else 0.0,
        total=_resources(n.total_resources),
        available=_resources(n.available_resources),
        labels={str(k): str(v) for k, v in n.labels.items()},
    )


Selector = dict[str, str]
#: A selector as a hashable merge key: its ``(key, condition)`` pairs, sorted.
SelectorKey = tuple[tuple[str, str], ...]


def _key(selector: Selector) -> SelectorKey:
    return tuple(sorted(selector.items()))


def _shapes(requests: Iterable[tuple[Any, int]]) -> list[Shape]:
    """Sum counts of identical requests: the same resources and the same selectors
    (Ray reports one entry per scheduling class). A request no node can ever match
    (see :func:`_alternatives`) is left out."""
    merged: dict[tuple[tuple[tuple[str, float], ...], tuple[SelectorKey, ...]], int] = {}
    for request, count in requests:
        if count <= 0:
            continue
        alternatives = _alternatives(request.label_selectors)
        if alternatives is None:
            continue
        key = (tuple(sorted(_resources(request.resources_bundle).items())),
               tuple(_key(s) for s in alternatives))
        merged[key] = merged.get(key, 0) + count
    return [
        Shape(
            resources=dict(resources),
            count=count,
            label_selector=dict(selectors[0]) if selectors else {},
            fallback_strategy=[FallbackOption(label_selector=dict(s)) for s in selectors[1:]],
        )
        for (resources, selectors), count in merged.items()
    ]


def _gangs(requests: Iterable[Any]) -> list[Gang]:
    """One Gang per distinct (strategy, bundles, bundle selectors); count = how many
    placement groups. A gang with a bundle no node can ever match is left out."""
    merged: dict[tuple[GangStrategy, tuple[tuple[tuple[str, float], ...], ...],
                       tuple[SelectorKey, ...]], int] = {}
    for gang in requests:
        # as Ray's own autoscaler reads it: the bundles with their selectors when
        # reported (only the first BundleSelector: Ray 2.60 makes one), else the legacy list
        bundle_requests = (gang.bundle_selectors[0].resource_requests
                           if gang.bundle_selectors else gang.requests)
        if not bundle_requests:
            continue
        selectors: list[SelectorKey] = []
        for request in bundle_requests:
            alternatives = _alternatives(request.label_selectors[:1])
            if alternatives is None:
                break
            selectors.append(_key(alternatives[0]) if alternatives else ())
        else:
            bundles = tuple(tuple(sorted(_resources(r.resources_bundle).items()))
                            for r in bundle_requests)
            key = (_strategy(gang, bundle_requests), bundles,
                   tuple(selectors) if any(selectors) else ())
            merged[key] = merged.get(key, 0) + 1
    return [
        Gang(strategy=strategy, bundles=[dict(b) for b in bundles], count=count,
             bundle_label_selector=[dict(s) for s in selectors])
        for (strategy, bundles, selectors), count in merged.items()
    ]


def _alternatives(selectors: Iterable[Any]) -> list[Selector] | None:
    """A request's reported selectors (``ray.rpc.LabelSelector``) in Ray's syntax,
    preferred first; [] when it may use any node; None when it can use no node.

    A selector that can match no node (see :func:`_selector`) is no alternative
    and is dropped; when none is left, the request can never be placed, as Ray's
    own scheduler would find. Once one alternative is empty (any node), those
    after it never apply: a request whose first selector is empty is the same
    demand as one without selectors, and merges with it.
    """
    reported = list(selectors)
    kept = [s for s in map(_selector, reported) if s is not None]
    if reported and not kept:
        return None
    if not kept or not kept[0]:
        return []
    return kept


def _selector(selector: Any) -> Selector | None:
    """One reported selector as ``{key: condition}``; None if it matches no node.

    Exact for everything Ray's selector syntax can write. Beyond it (reported by
    a newer Ray, say): an operator other than IN / NOT_IN matches no node, as in
    Ray's own autoscaler; a key or value outside the label syntax is one no node
    carries (Ray validates node labels with the same rules), so it is dropped
    from an IN list (an empty list matches no node) and a NOT_IN condition on it
    always holds. Several constraints on one key (Ray's dict syntax makes one)
    must all hold, and are combined.
    """
    from ray.core.generated import common_pb2

    operators = common_pb2.LabelSelectorOperator
    conditions: dict[str, Condition] = {}
    for constraint in selector.label_constraints:
        key = str(constraint.label_key)
        if constraint.operator == operators.Value("LABEL_OPERATOR_IN"):
            negated = False
        elif constraint.operator == operators.Value("LABEL_OPERATOR_NOT_IN"):
            negated = True
        else:
            return None
        values = frozenset(str(v) for v in constraint.label_values if _is_value(str(v)))
        if key_error(key) is not None:
            values = frozenset()
        merged = _both(conditions.get(key), Condition(key, values, negated))
        if not merged.negated and not merged.values:
            return None
        conditions[key] = merged
    out: Selector = {}
    for key, c in conditions.items():
        values = c.values
        if "" in values and (c.negated or len(values) > 1):
            # Ray's syntax writes the empty value only alone ({key: ""}); anything
            # else with it cannot come from a selector: the empty value is left out
            values = values - {""}
        if values:  # "none of no values" always holds
            out[key] = condition_text(sorted(values), c.negated)
    return out


def _is_value(value: str) -> bool:
    """A label value the selector syntax can write as one condition (``""`` included)."""
    try:
        return parse_condition("k", value) == Condition("k", frozenset({value}), False)
    except ValueError:
        return False


def _both(first: Condition | None, second: Condition) -> Condition:
    """The one condition that holds when both hold."""
    if first is None:
        return second
    if first.negated and second.negated:
        return Condition(first.key, first.values | second.values, True)
    if first.negated:
        first, second = second, first
    if second.negated:
        return Condition(first.key, first.values - second.values, False)
    return Condition(first.key, first.values & second.values, False)


_STRATEGIES: tuple[GangStrategy, ...] = ("STRICT_SPREAD", "STRICT_PACK", "SPREAD", "PACK")


def _strategy(gang: Any, bundles: Iterable[Any]) -> GangStrategy:
    """Ray encodes strict strategies as placement constraints on each bundle."""
    constraints = [c for r in bundles for c in r.placement_constraints]
    if any(c.HasField("anti_affinity") for c in constraints):
        return "STRICT_SPREAD"
    if any(c.HasField("affinity") for c in constraints):
        return "STRICT_PACK"
    details = str(gang.details)
    for name in _STRATEGIES:
        if name in details:
            return name
    return "PACK"
