"""What the autoscaler remembers about nodes between rounds, with named transitions.

The provider (what was launched) and Ray (what registered) are the truth, and
a restarted autoscaler rebuilds everything from them. This module keeps only
what they cannot tell: which nodes were already announced as registered,
which stops are under way, since when a pending node has been unneeded
(:class:`NodeTracker`), and each group's failure backoff
(:class:`GroupBackoff`). It does no I/O and reads no clock: callers pass
``now`` (wall-clock seconds, like the provider's launch times).

A node's lifecycle::

    seen pending ──▶ pending ──registered──▶ running ──drained──▶ draining
                       │          (seen running: adopted) ▲           │
                       │                                  │        stopping
                       └──────────stopping (no drain)─────┼──────▶ stopping ──▶ gone

Observation moves a node between pending and running: Ray registered it
(announced once per node, also for nodes adopted after a restart), or Ray
lost it. ``drained`` means Ray's GCS accepted an idle-termination drain, and
only a drained node may be stopped once it ran: drain before stop, anything
else raises :class:`TransitionError`. A pending node is stopped without a
drain (Ray does not know it). A node leaves the tracker when it exits
(:meth:`NodeTracker.exited`) or when the provider no longer lists it and no
stop of ours is still running.

Nodes whose stop is under way are not observed; once the stop has returned,
a node the provider still lists is followed again from what the snapshot
shows (a stop that failed, or an id the provider reuses: the KubeRay
provider numbers its pods not created yet).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

from rayscale.autoscaler.snapshot import NodeView

Phase = Literal["pending", "running", "draining", "stopping"]


class TransitionError(RuntimeError):
    """A transition the lifecycle does not allow (a bug in the caller)."""


@dataclass
class TrackedNode:
    id: str
    group: str
    phase: Phase
    since: float  # when it entered its phase
    registered: bool = False  # announced as registered with Ray (at most once)
    stop: Future[None] | None = None  # the provider's terminate, once stopping

    @property
    def stop_under_way(self) -> bool:
        return self.phase == "stopping" and self.stop is not None and not self.stop.done()


@dataclass
class Observed:
    """What one snapshot changed: nodes to announce and launches that timed out."""

    registered: list[NodeView] = field(default_factory=list)
    timed_out: list[NodeView] = field(default_factory=list)


class NodeTracker:
    """The lifecycle of every scalable node the autoscaler has seen."""

    def __init__(self, launch_timeout_s: float) -> None:
        self.launch_timeout_s = launch_timeout_s
        self.nodes: dict[str, TrackedNode] = {}
        self._unneeded_since: dict[str, float] = {}

    def get(self, node_id: str) -> TrackedNode | None:
        return self.nodes.get(node_id)

    def phase(self, node_id: str) -> Phase | None:
        node = self.nodes.get(node_id)
        return None if node is None else node.phase

    def stop_under_way(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.stop_under_way

    # ---------------------------------------------------------- observation

    def observe(self, views: Iterable[NodeView], listed: Collection[str], now: float) -> Observed:
        """Follow one snapshot; ``listed``: every id the provider lists this round.

        New nodes enter as pending or running (adopted), pending ones that
        registered become running (announced once), and pending ones launched
        more than ``launch_timeout_s`` ago are returned as timed out.
        """
        out = Observed()
        for view in views:
            if not view.scalable or view.status == "terminating":
                continue
            node = self.nodes.get(view.id)
            if node is None:
                node = self.nodes[view.id] = TrackedNode(view.id, view.group, view.status, now)
            elif node.stop_under_way or node.phase == "draining":
                continue
            elif node.phase != view.status:
                self._enter(node, view.status, now)  # registered, lost by Ray, or relisted
            if view.status == "running" and not node.registered:
                node.registered = True
                out.registered.append(view)
            elif (
                view.status == "pending"
                and view.launched_at is not None
                and now - view.launched_at > self.launch_timeout_s
            ):
                out.timed_out.append(view)
        for node_id in [i for i, n in self.nodes.items() if i not in listed]:
            if not self.nodes[node_id].stop_under_way:
                del self.nodes[node_id]
        return out

    # ---------------------------------------------------------- transitions

    def drained(self, node_id: str, now: float) -> TrackedNode:
        """Ray accepted an idle-termination drain: running -> draining."""
        return self._move(node_id, ("running",), "draining", now)

    def stopping(
        self, node_id: str, start: Callable[[], Future[None]], now: float
    ) -> TrackedNode:
        """Stop a pending node (no drain: Ray does not know it) or a drained one.

        ``start`` begins the provider's terminate; it is called only when the
        transition is allowed, and its future says when the stop has returned.
        """
        node = self._move(node_id, ("pending", "draining"), "stopping", now)
        node.stop = start()
        return node

    def exited(self, node_id: str) -> TrackedNode | None:
        """The provider found the node dead: forget it; returns what it was (None: unknown)."""
        self._unneeded_since.pop(node_id, None)
        return self.nodes.pop(node_id, None)

    # ---------------------------------------------------------- pending grace

    def unneeded_for(self, unneeded: Collection[str], now: float, grace_s: float) -> set[str]:
        """Of the pending nodes the planner calls unneeded now, those it has for ``grace_s``.

        Ray's demand dips for a moment while tasks move to new nodes: a node
        found needed again starts over.
        """
        since = self._unneeded_since
        for node_id in [i for i in since if i not in unneeded]:
            del since[node_id]
        return {i for i in unneeded if now - since.setdefault(i, now) >= grace_s}

    # ------------------------------------------------------------- internal

    def _move(
        self, node_id: str, sources: tuple[Phase, ...], target: Phase, now: float
    ) -> TrackedNode:
        node = self.nodes.get(node_id)
        if node is None:
            raise TransitionError(f"node {node_id}: not tracked, cannot become {target}")
        if node.phase not in sources:
            raise TransitionError(f"node {node_id}: {node.phase} cannot become {target}")
        self._enter(node, target, now)
        return node

    @staticmethod
    def _enter(node: TrackedNode, phase: Phase, now: float) -> None:
        node.phase = phase
        node.since = now


@dataclass
class Backoff:
    failures: int = 0
    until: float = 0.0


class GroupBackoff:
    """Per-group backoff after failed launches: first_s, doubling, at most max_s.

    While a group backs off the planner treats it as not launchable, so its
    demand falls through to the next group by priority at once.
    """

    def __init__(self, first_s: float, max_s: float = 300.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.groups: dict[str, Backoff] = {}

    def failed(self, group: str, now: float) -> float | None:
        """A launch of ``group`` failed: the new backoff in seconds, or None if one is on.

        Nodes of one batch fail together: failures during a backoff are the
        same outage and do not double it again.
        """
        b = self.groups.setdefault(group, Backoff())
        if b.until > now:
            return None
        b.failures += 1
        delay = min(self.max_s, self.first_s * 2.0 ** (b.failures - 1))
        b.until = now + delay
        return delay

    def succeeded(self, group: str) -> None:
        """A node of ``group`` registered: the group is healthy again."""
        self.groups.pop(group, None)

    def blocked(self, now: float) -> set[str]:
        return {g for g, b in self.groups.items() if b.until > now}
