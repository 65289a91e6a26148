"""What one round shows the outside: the status document and the gauges.

The status document is what `rayscale status` prints (the local autoscaler
writes it to the cluster's directory after every round); its keys are read by
cli/local_cmds.py and the end-to-end tests. The gauges are the Prometheus
view of the same moment. Counters (launches, stops, failures) are counted
where those happen, in the round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rayscale.api import RayCluster
from rayscale.autoscaler.events import ScalingEvent
from rayscale.autoscaler.metrics import LIMIT_KINDS, NODE_STATES, AutoscalerMetrics
from rayscale.autoscaler.snapshot import Snapshot
from rayscale.planner import Plan
from rayscale.planner.plan import Unplaced


def status_document(
    spec: RayCluster,
    snapshot: Snapshot,
    decision: Plan,
    not_launchable: set[str],
    events: Iterable[ScalingEvent],
) -> dict[str, Any]:
    groups = {}
    for g in spec.worker_groups:
        views = snapshot.of_group(g.group_name)
        groups[g.group_name] = {
            "running": sum(1 for v in views if v.status == "running"),
            "pending": sum(1 for v in views if v.status == "pending"),
            "terminating": sum(1 for v in views if v.status == "terminating"),
            "idle": sum(1 for v in views if v.status == "running" and (v.idle_s or 0.0) > 0),
            "min": g.min_replicas,
            "max": g.max_replicas,
            "launchable": g.group_name not in not_launchable,
            "resources": g.ray_resources,
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
        # as the plan writes demand (with any label selectors)
        "demand": Unplaced(tasks=obs.tasks, gangs=obs.gangs, floor=obs.floor).to_dict(),
        "plan": decision.to_dict(),
        "events": [e.to_dict() for e in list(events)[-30:]],
    }


def publish_gauges(
    metrics: AutoscalerMetrics,
    spec: RayCluster,
    snapshot: Snapshot,
    decision: Plan,
    not_launchable: set[str],
) -> None:
    """Nodes by group and state, pending, infeasible and capped demand, groups backing
    off (every series of a group from its first round on, at 0 until counted)."""
    metrics.know_groups(g.group_name for g in spec.worker_groups)
    counts: dict[tuple[str, str], int] = {}
    for view in snapshot.nodes:
        if view.scalable:
            key = (view.group, view.status)
            counts[key] = counts.get(key, 0) + 1
    for g in spec.worker_groups:
        for state in NODE_STATES:
            metrics.nodes.labels(g.group_name, state).set(counts.get((g.group_name, state), 0))
        metrics.backoff.labels(g.group_name).set(1 if g.group_name in not_launchable else 0)
        limit = limit_kind(decision.limited.get(g.group_name))
        for kind in LIMIT_KINDS:
            metrics.limited.labels(g.group_name, kind).set(1 if kind == limit else 0)
    obs = snapshot.observation
    metrics.pending_demand.labels("tasks").set(sum(s.count for s in obs.tasks))
    metrics.pending_demand.labels("gangs").set(sum(g.count for g in obs.gangs))
    metrics.pending_demand.labels("floor").set(sum(s.count for s in obs.floor))
    for kind, count in decision.infeasible.counts().items():
        metrics.infeasible_demand.labels(kind).set(count)
    for kind, count in decision.capped.counts().items():
        metrics.capped_demand.labels(kind).set(count)


def limit_kind(limit: str | None) -> str | None:
    """``quota:team-a/compute`` -> ``quota``; the other limits as they are."""
    return None if limit is None else limit.split(":", 1)[0]


def limit_words(limit: str) -> str:
    """A plan's limit for people: ``quota:team-a/compute`` -> ``quota team-a/compute``."""
    kind, _, name = limit.partition(":")
    return {"max": "maxReplicas", "max_nodes": "the cluster's maximum of nodes",
            "conservative": "Conservative upscaling", "backoff": "a backoff after a failed "
            "launch"}.get(kind, f"{kind} {name}".strip())
