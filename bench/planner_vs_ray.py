"""Benchmark: rayscale's planner against Ray autoscaler v2's scheduler.

Both are pure functions from a cluster snapshot to a scaling decision:

* rayscale: ``rayscale.planner.plan_json(ClusterState) -> Plan``
  (the contract is /work/shared/design/plan-format.md);
* Ray: ``ray.autoscaler.v2.scheduler.ResourceDemandScheduler.schedule(
  SchedulingRequest) -> SchedulingReply``.

The script builds one deterministic synthetic scenario (seeded), expresses it
in both input formats from the same Python data, times both decisions and
prints them side by side with what each decided (nodes launched per group,
launched capacity, demand left unsatisfied). No Ray cluster is started.

With ``--labelled`` the worker groups (and their running nodes) carry Ray
labels (a zone and a market type), and about 30 % of the task shapes and
every placement group's bundles carry Ray label selectors (IN, NOT_IN, and
selectors with a fallback), in both inputs.

    .venv/bin/python bench/planner_vs_ray.py --nodes 100 --requests 1000
    .venv/bin/python bench/planner_vs_ray.py            # 1000 nodes, 10k requests
    .venv/bin/python bench/planner_vs_ray.py --skip-ray --repeat 20
    .venv/bin/python bench/planner_vs_ray.py --nodes 10000 --requests 100000 --skip-ray
    .venv/bin/python bench/planner_vs_ray.py --json
    .venv/bin/python bench/planner_vs_ray.py --nodes 100 --requests 1000 --labelled
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.autoscaler.v2.scheduler import SchedulingReply, SchedulingRequest

GIB = 1024**3
CUSTOM = "fpga"  # the custom resource one group carries
Resources = dict[str, float]
PlanFn = Callable[[dict[str, Any]], dict[str, Any]]

# Node types, in the order groups are taken (--groups G takes the first G,
# cycling with a numeric suffix beyond the list).
GROUP_TEMPLATES: list[tuple[str, Resources]] = [
    ("cpu-4", {"CPU": 4, "memory": 16 * GIB}),
    ("cpu-16", {"CPU": 16, "memory": 64 * GIB}),
    ("gpu-1", {"CPU": 8, "GPU": 1, "memory": 32 * GIB}),
    ("gpu-4", {"CPU": 32, "GPU": 4, "memory": 128 * GIB}),
    ("fpga-8", {"CPU": 8, "memory": 32 * GIB, CUSTOM: 2}),
    ("cpu-2", {"CPU": 2, "memory": 8 * GIB}),
    ("cpu-8", {"CPU": 8, "memory": 32 * GIB}),
    ("gpu-2", {"CPU": 16, "GPU": 2, "memory": 64 * GIB}),
]
# A shape no template can hold (no node has 8 GPUs): exercises infeasibility.
INFEASIBLE_SHAPE: Resources = {"CPU": 1, "GPU": 8}
# Placement groups, taken in order (cycling) by --gangs K.
GANG_TEMPLATES: list[tuple[str, list[Resources]]] = [
    ("STRICT_SPREAD", [{"CPU": 2}] * 4),
    ("PACK", [{"CPU": 4, "GPU": 1}] * 2),
    ("STRICT_PACK", [{"CPU": 4}, {"CPU": 2}, {"CPU": 2}]),
    ("SPREAD", [{"CPU": 1, "memory": 2 * GIB}] * 3),
]

# --labelled: Ray's default label keys, the values groups draw from, and
# a zone no group runs in (selectors may name it: nothing can match them).
ZONE = "ray.io/availability-zone"
MARKET = "ray.io/market-type"
ZONES = ("zone-a", "zone-b", "zone-c")
NO_GROUP_ZONE = "zone-d"
MARKETS = ("on-demand", "spot")
SELECTOR_FRACTION = 0.3  # of the (feasible) task shapes

# A label selector in a normal form both inputs are written from and both
# outputs are read back into: conditions sorted by key, each
# (key, negated, sorted values); Ray's "v" is (key, False, (v,)), "!in(a,b)"
# is (key, True, (a, b)). A request's alternatives are its selector and then
# its fallbacks, in order; () means any node.
Condition = tuple[str, bool, tuple[str, ...]]
Selector = tuple[Condition, ...]
Alternatives = tuple[Selector, ...]


def selector_of(conditions: dict[str, str]) -> Selector:
    """A selector written in Ray's syntax ({key: "v" | "!v" | "in(a,b)" | "!in(a,b)"})."""
    out = []
    for key, text in conditions.items():
        negated = text.startswith("!")
        body = text[1:] if negated else text
        if body.startswith("in(") and body.endswith(")"):
            values = tuple(sorted(v.strip() for v in body[3:-1].split(",")))
        else:
            values = (body,)
        out.append((key, negated, values))
    return tuple(sorted(out))


def selector_text(selector: Selector) -> dict[str, str]:
    """A selector in Ray's syntax, as ``label_selector=`` takes it."""
    out = {}
    for key, negated, values in selector:
        body = values[0] if len(values) == 1 else f"in({','.join(values)})"
        out[key] = f"!{body}" if negated else body
    return out


def selector_matches(selector: Selector, labels: dict[str, str]) -> bool:
    """Ray's semantics: IN needs the label with one of the values; NOT_IN holds when absent."""
    return all((labels.get(key) in values) != negated for key, negated, values in selector)


def may_use(alternatives: Alternatives, labels: dict[str, str]) -> bool:
    """Whether a request with these alternatives may use a node with ``labels``."""
    return not alternatives or any(selector_matches(s, labels) for s in alternatives)


# ----------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Group:
    name: str
    resources: Resources
    max_nodes: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    id: str
    group: str
    total: Resources
    available: Resources
    idle_s: float
    labels: dict[str, str] = field(default_factory=dict)  # its group's


@dataclass(frozen=True)
class TaskDemand:
    resources: Resources
    count: int
    selectors: Alternatives = ()  # label_selector, then fallback_strategy


@dataclass(frozen=True)
class GangDemand:
    strategy: str
    bundles: list[Resources]
    bundle_selectors: tuple[Selector, ...] = ()  # one per bundle, or none


@dataclass(frozen=True)
class Scenario:
    groups: list[Group]
    nodes: list[Node]
    tasks: list[TaskDemand]
    gangs: list[GangDemand]
    idle_timeout_s: float
    max_nodes: int
    labelled: bool = False


def make_groups(count: int, max_per_group: int) -> list[Group]:
    groups = []
    for i in range(count):
        name, resources = GROUP_TEMPLATES[i % len(GROUP_TEMPLATES)]
        rounds = i // len(GROUP_TEMPLATES)
        suffix = f"-{rounds}" if rounds else ""
        groups.append(Group(name + suffix, dict(resources), max_per_group))
    return groups


def group_weight(group: Group) -> float:
    """How common a group's nodes are: CPU nodes most, accelerators less."""
    if group.resources.get("GPU", 0) or group.resources.get(CUSTOM, 0):
        return 1.0
    return 3.0


def used_resources(rng: random.Random, total: Resources) -> tuple[Resources, bool]:
    """What running work holds on a node: full (25 %), idle (20 %) or partly used."""
    roll = rng.random()
    if roll < 0.25:  # full: every schedulable unit taken, memory partly
        used = {k: v for k, v in total.items() if k != "memory"}
        used["memory"] = round(total["memory"] * rng.uniform(0.4, 1.0) / GIB) * GIB
        return used, False
    if roll < 0.45:
        return {}, True
    fraction = rng.uniform(0.1, 0.9)
    used = {"CPU": min(total["CPU"], round(total["CPU"] * fraction * 2) / 2)}
    used["memory"] = round(total["memory"] * fraction / GIB) * GIB
    for name in ("GPU", CUSTOM):
        if total.get(name):
            used[name] = rng.randint(0, int(total[name]))
    return used, False


def make_node(rng: random.Random, index: int, group: Group, idle_timeout_s: float) -> Node:
    used, idle = used_resources(rng, group.resources)
    available = {k: v - used.get(k, 0) for k, v in group.resources.items()}
    # Idle nodes have been idle for up to twice the timeout: about half are
    # candidates for idle termination (if no pending demand wants them).
    idle_s = round(rng.uniform(0, 2 * idle_timeout_s), 1) if idle else 0.0
    return Node(
        f"w-{index:05d}", group.name, dict(group.resources), available, idle_s, dict(group.labels)
    )


def make_nodes(
    rng: random.Random, groups: list[Group], count: int, idle_timeout_s: float
) -> list[Node]:
    weights = [group_weight(g) for g in groups]
    chosen = rng.choices(groups, weights=weights, k=count)
    return [make_node(rng, i, g, idle_timeout_s) for i, g in enumerate(chosen)]


def random_shape(rng: random.Random) -> Resources:
    """One task/actor shape: CPU 0.5-8, some with GPU, memory or the custom resource."""
    roll = rng.random()
    shape: Resources = {"CPU": rng.choice([0.5, 1, 1, 2, 2, 4, 8])}
    if roll < 0.2:
        shape = {"CPU": rng.choice([1, 2, 4]), "GPU": rng.choice([1, 1, 2])}
    elif roll < 0.3:
        shape[CUSTOM] = 1
    if rng.random() < 0.4:
        shape["memory"] = rng.choice([1, 2, 4, 8]) * GIB
    return shape


def make_shapes(rng: random.Random, count: int) -> list[Resources]:
    """``count`` distinct shapes; the last is infeasible when count >= 4."""
    feasible = count - 1 if count >= 4 else count
    shapes: list[Resources] = []
    seen: set[tuple[tuple[str, float], ...]] = set()
    for _ in range(1000 * count):
        if len(shapes) == feasible:
            break
        shape = random_shape(rng)
        key = tuple(sorted(shape.items()))
        if key not in seen:
            seen.add(key)
            shapes.append(shape)
    if len(shapes) < feasible:
        raise SystemExit(f"cannot draw {feasible} distinct shapes; use fewer --shapes")
    return shapes + ([dict(INFEASIBLE_SHAPE)] if count >= 4 else [])


def make_tasks(
    rng: random.Random,
    shapes: list[Resources],
    requests: int,
    selectors: list[Alternatives] | None = None,
) -> list[TaskDemand]:
    """Spread ``requests`` over the shapes with Zipf-like popularity."""
    weights = [1.0 / (i + 1) for i in range(len(shapes))]
    counts = Counter(rng.choices(range(len(shapes)), weights=weights, k=requests))
    chosen = selectors or [()] * len(shapes)
    return [TaskDemand(shapes[i], counts[i], chosen[i]) for i in sorted(counts)]


def make_gangs(count: int) -> list[GangDemand]:
    return [GangDemand(*GANG_TEMPLATES[i % len(GANG_TEMPLATES)]) for i in range(count)]


def label_groups(rng: random.Random, groups: list[Group]) -> list[Group]:
    """Each group with a zone and a market type (``--labelled``)."""
    return [
        Group(
            g.name, g.resources, g.max_nodes, {ZONE: rng.choice(ZONES), MARKET: rng.choice(MARKETS)}
        )
        for g in groups
    ]


def random_selectors(rng: random.Random, kind: str) -> Alternatives:
    """One request's label selector (and fallbacks) of the given kind."""
    zones = (*ZONES, NO_GROUP_ZONE)
    if kind == "in":  # one zone, or two
        picked = rng.sample(zones, rng.choice([1, 2]))
        return (selector_of({ZONE: picked[0] if len(picked) == 1 else f"in({','.join(picked)})"}),)
    if kind == "not_in":  # not spot, or not in two zones
        if rng.random() < 0.5:
            return (selector_of({MARKET: "!spot"}),)
        return (selector_of({ZONE: f"!in({','.join(rng.sample(ZONES, 2))})"}),)
    # a preferred selector, then one or two fallbacks
    if rng.random() < 0.5:
        return (selector_of({MARKET: "spot"}), selector_of({MARKET: "on-demand"}))
    first, *rest = rng.sample(zones, 3)
    return (selector_of({ZONE: first}), *(selector_of({ZONE: z}) for z in rest))


def make_selectors(rng: random.Random, shapes: list[Resources]) -> list[Alternatives]:
    """Selectors for SELECTOR_FRACTION of the feasible shapes (IN, NOT_IN, with fallback).

    The first is always ``{zone: zone-d}``, a zone no group runs in: demand
    that neither scheduler can ever place, whatever the group labels.
    """
    feasible = [i for i, s in enumerate(shapes) if s != INFEASIBLE_SHAPE]
    chosen = rng.sample(feasible, round(SELECTOR_FRACTION * len(feasible)))
    kinds = ["in", "not_in", "fallback"]
    out: list[Alternatives] = [()] * len(shapes)
    for n, i in enumerate(chosen):
        if n == 0:
            out[i] = (selector_of({ZONE: NO_GROUP_ZONE}),)
        else:
            out[i] = random_selectors(rng, kinds[n % len(kinds)])
    return out


def label_gangs(rng: random.Random, gangs: list[GangDemand]) -> list[GangDemand]:
    """Bundle selectors for every placement group (``--labelled``).

    One selector per bundle, without fallbacks (Ray's scheduler reads only
    ``bundle_selectors[0]``). A STRICT_PACK gang gets the same selector on
    every bundle: Ray combines its bundles into one request only when their
    selectors are equal.
    """

    def one() -> Selector:
        if rng.random() < 0.5:
            return selector_of({ZONE: rng.choice(ZONES)})
        return selector_of({MARKET: "!spot"})

    out = []
    for gang in gangs:
        if gang.strategy == "STRICT_PACK":
            selectors = (one(),) * len(gang.bundles)
        else:
            selectors = tuple(one() for _ in gang.bundles)
        out.append(GangDemand(gang.strategy, gang.bundles, selectors))
    return out


def make_scenario(args: argparse.Namespace) -> Scenario:
    # One random stream per part, so that e.g. --nodes does not change the shapes.
    def stream(part: str) -> random.Random:
        return random.Random(f"{args.seed}:{part}")

    labelled = getattr(args, "labelled", False)
    idle_timeout_s = 60.0
    max_per_group = 20 * max(args.nodes, args.requests)
    groups = make_groups(args.groups, max_per_group)
    if labelled:
        groups = label_groups(stream("labels"), groups)
    nodes = make_nodes(stream("nodes"), groups, args.nodes, idle_timeout_s)
    shapes = make_shapes(stream("shapes"), args.shapes)
    selectors = make_selectors(stream("selectors"), shapes) if labelled else None
    tasks = make_tasks(stream("tasks"), shapes, args.requests, selectors)
    gangs = make_gangs(args.gangs)
    if labelled:
        gangs = label_gangs(stream("gang-selectors"), gangs)
    return Scenario(
        groups, nodes, tasks, gangs, idle_timeout_s, len(groups) * max_per_group, labelled
    )


# ------------------------------------------------- rayscale's ClusterState


def group_doc(group: Group) -> dict[str, Any]:
    return {
        "resources": dict(group.resources),
        "min": 0,
        "max": group.max_nodes,
        "idle_timeout_s": None,
        "priority": 0,
        "launchable": True,
        "memory_target_fraction": None,
        "labels": dict(group.labels),
    }


def node_doc(node: Node) -> dict[str, Any]:
    doc = {
        "id": node.id,
        "group": node.group,
        "status": "running",
        "total": dict(node.total),
        "available": dict(node.available),
        "idle_s": node.idle_s,
    }
    if node.labels:  # as the autoscaler reports them (Ray's node labels)
        doc["labels"] = dict(node.labels)
    return doc


def task_doc(task: TaskDemand) -> dict[str, Any]:
    doc: dict[str, Any] = {"resources": dict(task.resources), "count": task.count}
    if task.selectors:
        first, *fallbacks = task.selectors
        doc["label_selector"] = selector_text(first)
        if fallbacks:
            doc["fallback_strategy"] = [{"label_selector": selector_text(s)} for s in fallbacks]
    return doc


def gang_doc(gang: GangDemand) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "strategy": gang.strategy,
        "bundles": [dict(b) for b in gang.bundles],
        "count": 1,
    }
    if gang.bundle_selectors:
        doc["bundle_label_selector"] = [selector_text(s) for s in gang.bundle_selectors]
    return doc


def cluster_state(sc: Scenario) -> dict[str, Any]:
    """The scenario as a ClusterState document (plan-format.md)."""
    return {
        "groups": {g.name: group_doc(g) for g in sc.groups},
        "nodes": [node_doc(n) for n in sc.nodes],
        "demand": {
            "tasks": [task_doc(t) for t in sc.tasks],
            "gangs": [gang_doc(g) for g in sc.gangs],
            "floor": [],
        },
        "options": {
            "upscaling_mode": "Default",
            "idle_timeout_s": sc.idle_timeout_s,
            "max_nodes": sc.max_nodes,
        },
    }


# ------------------------------------------------- Ray's SchedulingRequest


def ray_label_selector(selector: Selector) -> Any:
    """A selector as Ray's GCS reports it: IN / NOT_IN constraints."""
    from ray.core.generated.common_pb2 import (  # type: ignore[attr-defined]
        LabelSelector,
        LabelSelectorConstraint,
        LabelSelectorOperator,
    )

    return LabelSelector(
        label_constraints=[
            LabelSelectorConstraint(
                label_key=key,
                operator=LabelSelectorOperator.LABEL_OPERATOR_NOT_IN
                if negated
                else LabelSelectorOperator.LABEL_OPERATOR_IN,
                label_values=list(values),
            )
            for key, negated, values in selector
        ]
    )


def selector_from_ray(selector: Any) -> Selector:
    """The normal form of a reported ``LabelSelector``."""
    from ray.core.generated.common_pb2 import LabelSelectorOperator  # type: ignore[attr-defined]

    not_in = LabelSelectorOperator.LABEL_OPERATOR_NOT_IN
    return tuple(
        sorted(
            (c.label_key, c.operator == not_in, tuple(sorted(c.label_values)))
            for c in selector.label_constraints
        )
    )


def ray_request(resources: Resources, selectors: Alternatives = (), **kw: Any) -> Any:
    """A ResourceRequest; ``label_selectors`` is the selector, then its fallbacks in order."""
    from ray.core.generated.autoscaler_pb2 import ResourceRequest  # type: ignore[attr-defined]

    return ResourceRequest(
        resources_bundle=resources,
        label_selectors=[ray_label_selector(s) for s in selectors],
        **kw,
    )


def ray_instance(node: Node, index: int) -> Any:
    """A RAY_RUNNING instance whose ray_node carries total/available resources."""
    from ray.autoscaler.v2.schema import AutoscalerInstance
    from ray.core.generated.autoscaler_pb2 import NodeState, NodeStatus  # type: ignore[attr-defined]
    from ray.core.generated.instance_manager_pb2 import Instance, NodeKind  # type: ignore[attr-defined]

    ray_node_id = f"{index:056x}"  # 28-byte hex, like a real NodeID
    cloud_id = f"cloud-{node.id}"
    im_instance = Instance(
        instance_id=f"im-{node.id}",
        cloud_instance_id=cloud_id,
        node_id=ray_node_id,
        instance_type=node.group,
        status=Instance.RAY_RUNNING,
        node_kind=NodeKind.WORKER,
    )
    ray_node = NodeState(
        node_id=bytes.fromhex(ray_node_id),
        instance_id=cloud_id,
        ray_node_type_name=node.group,
        instance_type_name=node.group,
        total_resources=node.total,
        available_resources=node.available,
        idle_duration_ms=int(node.idle_s * 1000),
        status=NodeStatus.IDLE if node.idle_s else NodeStatus.RUNNING,
        labels=node.labels,
    )
    return AutoscalerInstance(
        cloud_instance_id=cloud_id, ray_node=ray_node, im_instance=im_instance
    )


def ray_gang(gang: GangDemand, index: int) -> Any:
    """A placement group as the GCS reports it (strict strategies as label constraints)."""
    from ray.core.generated.autoscaler_pb2 import (  # type: ignore[attr-defined]
        AffinityConstraint,
        AntiAffinityConstraint,
        BundleSelector,
        GangResourceRequest,
        PlacementConstraint,
    )

    label = f"_PG_{index:036x}"
    constraints = []
    if gang.strategy == "STRICT_SPREAD":
        constraints = [PlacementConstraint(anti_affinity=AntiAffinityConstraint(label_name=label))]
    elif gang.strategy == "STRICT_PACK":
        constraints = [PlacementConstraint(affinity=AffinityConstraint(label_name=label))]
    # A bundle's selector goes on its request: Ray's scheduler reads
    # bundle_selectors[0].resource_requests, each with its label_selectors.
    selectors = gang.bundle_selectors or ((),) * len(gang.bundles)
    requests = [
        ray_request(b, (s,) if s else (), placement_constraints=constraints)
        for b, s in zip(gang.bundles, selectors, strict=True)
    ]
    return GangResourceRequest(
        details=f"{label[4:]}:{gang.strategy}|PENDING",
        requests=requests,
        bundle_selectors=[BundleSelector(resource_requests=requests)],
    )


def scheduling_request(sc: Scenario) -> SchedulingRequest:
    """The scenario as Ray autoscaler v2's SchedulingRequest."""
    from ray.autoscaler.v2.instance_manager.config import NodeTypeConfig
    from ray.autoscaler.v2.scheduler import SchedulingRequest
    from ray.core.generated.autoscaler_pb2 import ResourceRequestByCount  # type: ignore[attr-defined]

    return SchedulingRequest(
        disable_launch_config_check=True,
        node_type_configs={
            g.name: NodeTypeConfig(
                name=g.name,
                min_worker_nodes=0,
                max_worker_nodes=g.max_nodes,
                resources=dict(g.resources),
                labels=dict(g.labels),
            )
            for g in sc.groups
        },
        max_num_nodes=sc.max_nodes,
        idle_timeout_s=sc.idle_timeout_s,
        resource_requests=[
            ResourceRequestByCount(request=ray_request(t.resources, t.selectors), count=t.count)
            for t in sc.tasks
        ],
        gang_resource_requests=[ray_gang(g, i) for i, g in enumerate(sc.gangs)],
        current_instances=[ray_instance(n, i) for i, n in enumerate(sc.nodes)],
    )


# ------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """One scheduler's decision on the scenario, in common terms."""

    name: str
    seconds: float  # median decision time
    runs: list[float]
    launched: dict[str, int]
    terminated: list[str]  # node ids
    unsatisfied: list[TaskDemand]  # task/actor requests left infeasible or capped
    unsatisfied_gangs: int
    # rayscale only: the two halves of plan_json, timed on their own (medians)
    parse_seconds: float | None = None  # parse_state(document)
    plan_seconds: float | None = None  # plan(ClusterState), the state built beforehand

    @property
    def unsatisfied_tasks(self) -> int:
        return sum(t.count for t in self.unsatisfied)


ShapeKey = tuple[tuple[str, float], ...]
DemandKey = tuple[ShapeKey, Alternatives]


def shape_key(resources: Resources) -> ShapeKey:
    return tuple(sorted((k, float(v)) for k, v in resources.items() if v))


def demand_key(task: TaskDemand) -> DemandKey:
    """Identical resources with different selectors are different demand."""
    return shape_key(task.resources), task.selectors


def merge_demand(entries: list[TaskDemand]) -> list[TaskDemand]:
    counts: Counter[DemandKey] = Counter()
    for entry in entries:
        counts[demand_key(entry)] += entry.count
    return [TaskDemand(dict(key), count, sel) for (key, sel), count in sorted(counts.items())]


def plan_task(entry: dict[str, Any]) -> TaskDemand:
    """A task entry of a plan's infeasible/capped part, its selectors read back."""
    selectors: Alternatives = ()
    if entry.get("label_selector"):
        fallbacks = [f.get("label_selector") or {} for f in entry.get("fallback_strategy", [])]
        selectors = tuple(selector_of(s) for s in [entry["label_selector"], *fallbacks])
    return TaskDemand(dict(entry["resources"]), int(entry.get("count", 1)), selectors)


def plan_tasks(part: dict[str, Any]) -> list[TaskDemand]:
    return [plan_task(t) for t in part.get("tasks", [])]


def plan_gangs(part: dict[str, Any]) -> int:
    return sum(int(g.get("count", 1)) for g in part.get("gangs", []))


def rayscale_outcome(plan: dict[str, Any], runs: list[float]) -> Outcome:
    left = [plan.get("infeasible", {}), plan.get("capped", {})]
    return Outcome(
        name="rayscale",
        seconds=statistics.median(runs),
        runs=runs,
        launched={g: int(n) for g, n in plan.get("launch", {}).items() if n},
        terminated=[t["id"] for t in plan.get("terminate", [])],
        unsatisfied=merge_demand([t for part in left for t in plan_tasks(part)]),
        unsatisfied_gangs=sum(plan_gangs(part) for part in left),
    )


def ray_outcome(reply: SchedulingReply, seconds: float) -> Outcome:
    launched: Counter[str] = Counter()
    for launch in reply.to_launch:
        launched[launch.instance_type] += launch.count
    unsatisfied = [
        TaskDemand(
            dict(r.resources_bundle), 1, tuple(selector_from_ray(s) for s in r.label_selectors)
        )
        for r in reply.infeasible_resource_requests
    ]
    return Outcome(
        name="ray",
        seconds=seconds,
        runs=[seconds],
        launched=dict(launched),
        terminated=[t.instance_id.removeprefix("im-") for t in reply.to_terminate],
        unsatisfied=merge_demand(unsatisfied),
        unsatisfied_gangs=len(reply.infeasible_gang_resource_requests),
    )


def sum_resources(weighted: Iterable[tuple[Resources, float]]) -> Resources:
    """The sum of ``resources * times`` over ``(resources, times)`` pairs."""
    total: Resources = {}
    for resources, times in weighted:
        for name, amount in resources.items():
            total[name] = total.get(name, 0.0) + amount * times
    return total


def launched_capacity(outcome: Outcome, groups: list[Group]) -> Resources:
    shapes = {g.name: g.resources for g in groups}
    return sum_resources((shapes[g], n) for g, n in outcome.launched.items())


# ------------------------------------------- a common sufficiency check


def copies_that_fit(free: Resources, shape: Resources) -> int:
    """How many copies of ``shape`` fit in ``free`` (tolerating float dust)."""
    fits = [math.floor((free.get(k, 0.0) + 1e-9) / v) for k, v in shape.items() if v > 0]
    return max(0, min(fits)) if fits else sys.maxsize


def wanted_tasks(sc: Scenario, outcome: Outcome) -> Counter[DemandKey]:
    """The pending task requests a decision claims to serve (all minus unsatisfied)."""
    wanted: Counter[DemandKey] = Counter()
    for task in sc.tasks:
        wanted[demand_key(task)] += task.count
    for task in outcome.unsatisfied:
        wanted[demand_key(task)] -= task.count
    return +wanted  # drops counts <= 0


def bins_after(sc: Scenario, outcome: Outcome) -> list[tuple[Resources, dict[str, str]]]:
    """Free capacity (and labels) of the running nodes kept, then of the launched ones."""
    gone = set(outcome.terminated)
    bins = [(dict(n.available), n.labels) for n in sc.nodes if n.id not in gone]
    for group in sc.groups:
        launched = outcome.launched.get(group.name, 0)
        bins += [(dict(group.resources), group.labels) for _ in range(launched)]
    return bins


def ffd_leftover(sc: Scenario, outcome: Outcome, selectors_first: bool = False) -> int:
    """Task requests the decision serves on paper that first-fit-decreasing cannot place.

    The same yardstick for both schedulers (plan-format.md's "sufficient"
    check): 0 means the capacity after the decision holds all the demand the
    scheduler did not report as unsatisfied. Placement groups are left out.
    A request with label selectors only goes to a node one of them matches.
    With ``selectors_first``, requests with selectors are placed before the
    others (each part still decreasing), as Ray's scheduler orders them: the
    most constrained demand first, which is not the contract's order.
    """
    largest: Resources = {}
    for group in sc.groups:
        for name, amount in group.resources.items():
            largest[name] = max(largest.get(name, 0.0), amount)

    def size(key: DemandKey) -> float:
        return sum(v / (largest.get(k) or v) for k, v in key[0])

    bins = bins_after(sc, outcome)
    leftover = 0
    wanted = wanted_tasks(sc, outcome)

    def order(key: DemandKey) -> tuple[Any, ...]:
        return (bool(key[1]) if selectors_first else False, size(key), key)

    for key in sorted(wanted, key=order, reverse=True):
        shape, selectors, count = dict(key[0]), key[1], wanted[key]
        for free, labels in bins:
            if not may_use(selectors, labels):
                continue
            placed = min(count, copies_that_fit(free, shape))
            for name, amount in shape.items():
                free[name] = free.get(name, 0.0) - placed * amount
            count -= placed
            if count == 0:
                break
        leftover += count
    return leftover


def unplaceable(sc: Scenario, task: TaskDemand) -> str | None:
    """Why no decision can ever serve ``task``, or None if one can.

    "resources": no group's node shape holds it; "labels": some do, but none
    of those has labels its selectors (or fallbacks) match. Running nodes
    carry their group's shape and labels, so they change nothing.
    """
    holders = [g for g in sc.groups if copies_that_fit(g.resources, task.resources) >= 1]
    if not holders:
        return "resources"
    if not any(may_use(task.selectors, g.labels) for g in holders):
        return "labels"
    return None


def unsatisfied_by_cause(sc: Scenario, outcome: Outcome) -> dict[str, int]:
    """An outcome's unsatisfied task requests: never placeable (by cause) or not."""
    out = {"resources": 0, "labels": 0, "placeable": 0}
    for task in outcome.unsatisfied:
        out[unplaceable(sc, task) or "placeable"] += task.count
    return out


def selectors_text(selectors: Alternatives) -> dict[str, Any]:
    """Alternatives as a plan writes them: label_selector, fallback_strategy."""
    if not selectors:
        return {}
    first, *fallbacks = selectors
    out: dict[str, Any] = {"label_selector": selector_text(first)}
    if fallbacks:
        out["fallback_strategy"] = [{"label_selector": selector_text(f)} for f in fallbacks]
    return out


def demand_text(task: TaskDemand) -> str:
    """One line for a demand: its resources, then its selectors in Ray's syntax."""
    text = "{" + fmt_resources(task.resources) + "}"
    for i, selector in enumerate(task.selectors):
        conditions = ", ".join(f"{k}: {v}" for k, v in selector_text(selector).items())
        text += f" {'selector' if i == 0 else 'fallback'} {{{conditions}}}"
    return text


def unsatisfied_differences(sc: Scenario, outcomes: list[Outcome]) -> list[str]:
    """Lines for the demand whose unsatisfied count differs between the outcomes."""
    if len(outcomes) < 2:
        return []
    counts = [Counter({demand_key(t): t.count for t in o.unsatisfied}) for o in outcomes]
    keys = sorted(set().union(*counts))
    lines = []
    for key in keys:
        cells = [c[key] for c in counts]
        if len(set(cells)) > 1:
            task = TaskDemand(dict(key[0]), 0, key[1])
            cause = unplaceable(sc, task) or "placeable"
            per = ", ".join(f"{o.name} {n}" for o, n in zip(outcomes, cells, strict=True))
            lines.append(f"{demand_text(task)} ({cause}): {per}")
    return lines


# --------------------------------------------------------------- timing


def load_planner() -> PlanFn | None:
    """rayscale.planner.plan_json, or None while it does not exist yet."""
    try:
        from rayscale.planner import plan_json  # type: ignore[attr-defined]
    except ImportError:
        return None
    return plan_json  # type: ignore[no-any-return]


def time_parts(state: dict[str, Any], repeat: int) -> tuple[float, float] | None:
    """Medians of parse_state(document) and of plan(ClusterState) on a state built before.

    plan_json is the two in a row. The autoscaler can build the ClusterState
    itself (no document to parse), so the planning half is timed on its own.
    None if the planner has no parse_state/plan.
    """
    try:
        from rayscale.planner import parse_state, plan  # type: ignore[attr-defined]
    except ImportError:
        return None
    parse_runs: list[float] = []
    plan_runs: list[float] = []
    for _ in range(repeat):
        doc = copy.deepcopy(state)
        start = time.perf_counter()
        cluster = parse_state(doc)
        parse_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        plan(cluster)
        plan_runs.append(time.perf_counter() - start)
    return statistics.median(parse_runs), statistics.median(plan_runs)


def time_rayscale(plan_fn: PlanFn, state: dict[str, Any], repeat: int) -> Outcome:
    runs: list[float] = []
    plans: list[dict[str, Any]] = []
    for _ in range(repeat):
        doc = copy.deepcopy(state)  # the planner may not mutate, but make sure
        start = time.perf_counter()
        plans.append(plan_fn(doc))
        runs.append(time.perf_counter() - start)
    if any(p != plans[0] for p in plans):
        print("warning: rayscale gave different plans for the same state", file=sys.stderr)
    outcome = rayscale_outcome(plans[0], runs)
    parts = time_parts(state, repeat)
    if parts is not None:
        outcome.parse_seconds, outcome.plan_seconds = parts
    return outcome


@contextmanager
def progress(label: str, every_s: float = 10.0) -> Iterator[None]:
    """Print a line to stderr every ``every_s`` seconds until the block ends."""
    done = threading.Event()
    start = time.perf_counter()

    def tick() -> None:
        while not done.wait(every_s):
            print(f"  {label}: {time.perf_counter() - start:.0f} s ...", file=sys.stderr)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def time_ray(request: SchedulingRequest) -> Outcome:
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

    scheduler = ResourceDemandScheduler()
    print("running Ray's ResourceDemandScheduler.schedule (may take minutes)", file=sys.stderr)
    with progress("Ray scheduler still running"):
        start = time.perf_counter()
        reply = scheduler.schedule(request)
        seconds = time.perf_counter() - start
    print(f"  Ray scheduler done in {seconds:.2f} s", file=sys.stderr)
    return ray_outcome(reply, seconds)


# -------------------------------------------------------------- reports


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "ray": version_of("ray"),
        "rayscale": version_of("rayscale"),
    }


def labels_summary(sc: Scenario) -> dict[str, Any]:
    """What --labelled added to the scenario."""
    labelled = [t for t in sc.tasks if t.selectors]
    never: Counter[str] = Counter()
    for task in sc.tasks:
        never[unplaceable(sc, task) or "placeable"] += task.count
    return {
        "group_labels": {g.name: g.labels for g in sc.groups},
        "labelled_shapes": len(labelled),
        "labelled_requests": sum(t.count for t in labelled),
        "labelled_shape_selectors": [
            {"resources": t.resources, "count": t.count, **selectors_text(t.selectors)}
            for t in labelled
        ],
        "gang_bundle_selectors": [[selector_text(s) for s in g.bundle_selectors] for g in sc.gangs],
        "never_placeable": {"resources": never["resources"], "labels": never["labels"]},
    }


def scenario_summary(sc: Scenario) -> dict[str, Any]:
    free = sum_resources((n.available, 1) for n in sc.nodes)
    pending = sum_resources((t.resources, t.count) for t in sc.tasks)
    extra = {"labels": labels_summary(sc)} if sc.labelled else {}
    return {
        "groups": {g.name: g.resources for g in sc.groups},
        "nodes_per_group": dict(Counter(n.group for n in sc.nodes)),
        "idle_nodes": sum(1 for n in sc.nodes if n.idle_s > 0),
        "idle_past_timeout": sum(1 for n in sc.nodes if n.idle_s > sc.idle_timeout_s),
        "free_capacity": free,
        "task_requests": sum(t.count for t in sc.tasks),
        "task_shapes": len(sc.tasks),
        "pending_task_resources": pending,
        "gangs": [g.strategy for g in sc.gangs],
        **extra,
    }


def fmt_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:,.2f} s"


def fmt_amount(name: str, amount: float) -> str:
    if name == "memory":
        return f"{amount / GIB:,.0f} GiB"
    return f"{amount:,.1f}".removesuffix(".0")


def fmt_resources(resources: Resources) -> str:
    return ", ".join(f"{k} {fmt_amount(k, v)}" for k, v in sorted(resources.items()))


def comparison_rows(sc: Scenario, outcomes: list[Outcome]) -> list[list[str]]:
    rows = [["decision time", *[fmt_seconds(o.seconds) for o in outcomes]]]
    parts = (("  parse_state alone", "parse_seconds"), ("  plan(state) alone", "plan_seconds"))
    for label, attr in parts:
        cells = [getattr(o, attr) for o in outcomes]
        if any(c is not None for c in cells):
            rows.append([label, *["-" if c is None else fmt_seconds(c) for c in cells]])
    for group in sc.groups:
        rows.append(
            [f"launch {group.name}", *[str(o.launched.get(group.name, 0)) for o in outcomes]]
        )
    rows.append(["launch total", *[str(sum(o.launched.values())) for o in outcomes]])
    capacities = [launched_capacity(o, sc.groups) for o in outcomes]
    names = sorted({k for c in capacities for k in c} | {"CPU", "GPU", "memory"})
    for name in names:
        rows.append([f"launched {name}", *[fmt_amount(name, c.get(name, 0)) for c in capacities]])
    rows.append(["terminate (idle)", *[str(len(o.terminated)) for o in outcomes]])
    rows.append(["unsatisfied task requests", *[str(o.unsatisfied_tasks) for o in outcomes]])
    if sc.labelled:
        causes = [unsatisfied_by_cause(sc, o) for o in outcomes]
        for label, cause in (
            ("  no group holds the resources", "resources"),
            ("  no group that holds it matches", "labels"),
            ("  placeable, left unsatisfied", "placeable"),
        ):
            rows.append([label, *[str(c[cause]) for c in causes]])
        rows.append(
            [
                "unsatisfied, with a selector",
                *[str(sum(t.count for t in o.unsatisfied if t.selectors)) for o in outcomes],
            ]
        )
    rows.append(["unsatisfied gangs", *[str(o.unsatisfied_gangs) for o in outcomes]])
    rows.append(["FFD check: tasks not placed", *[str(ffd_leftover(sc, o)) for o in outcomes]])
    if sc.labelled:
        rows.append(
            ["  same, selectors first", *[str(ffd_leftover(sc, o, True)) for o in outcomes]]
        )
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))


def speedup(outcomes: list[Outcome]) -> float | None:
    by_name = {o.name: o for o in outcomes}
    if "ray" in by_name and "rayscale" in by_name and by_name["rayscale"].seconds > 0:
        return by_name["ray"].seconds / by_name["rayscale"].seconds
    return None


def print_report(
    args: argparse.Namespace, sc: Scenario, outcomes: list[Outcome], notes: list[str]
) -> None:
    info = machine_info()
    summary = scenario_summary(sc)
    print(
        f"machine: nproc {info['nproc']}, {info['processor']}, python {info['python']}, "
        f"ray {info['ray']}, rayscale {info['rayscale']}"
    )
    print(
        f"scenario: seed {args.seed}, {len(sc.nodes)} running nodes over "
        f"{len(sc.groups)} groups, {summary['task_requests']} task requests in "
        f"{summary['task_shapes']} shapes, {len(sc.gangs)} placement groups"
    )
    print(f"  nodes per group: {summary['nodes_per_group']}")
    print(
        f"  idle nodes: {summary['idle_nodes']} ({summary['idle_past_timeout']} "
        f"past the {sc.idle_timeout_s:.0f} s timeout)"
    )
    print(f"  free capacity: {fmt_resources(summary['free_capacity'])}")
    print(f"  pending tasks need: {fmt_resources(summary['pending_task_resources'])}")
    if sc.labelled:
        labels = summary["labels"]
        print(
            "  group labels: "
            + "; ".join(
                f"{g} " + ", ".join(f"{k}={v}" for k, v in sorted(ls.items()))
                for g, ls in labels["group_labels"].items()
            )
        )
        print(
            f"  label selectors on {labels['labelled_shapes']} of {len(sc.tasks)} task shapes "
            f"({labels['labelled_requests']} requests):"
        )
        for task in sc.tasks:
            if task.selectors:
                print(f"    {demand_text(task)} x {task.count}")
        for gang in sc.gangs:
            if gang.bundle_selectors:
                per = "; ".join(
                    ", ".join(f"{k}: {v}" for k, v in selector_text(s).items())
                    for s in gang.bundle_selectors
                )
                print(f"    {gang.strategy} bundle selectors: {per}")
        never = labels["never_placeable"]
        print(
            f"  never placeable: {never['resources']} requests (no group holds the "
            f"resources), {never['labels']} (no group that holds them matches the labels)"
        )
    print()
    if outcomes:
        print_table(["", *[o.name for o in outcomes]], comparison_rows(sc, outcomes))
        differences = unsatisfied_differences(sc, outcomes)
        if differences:
            print("\nunsatisfied task requests that differ:")
            for line in differences:
                print(f"  {line}")
    ratio = speedup(outcomes)
    if ratio is not None:
        print(f"\nRay / rayscale decision time: {ratio:,.1f}x")
    rayscale = next((o for o in outcomes if o.name == "rayscale"), None)
    if rayscale is not None:
        runs = ", ".join(fmt_seconds(r) for r in rayscale.runs)
        print(f"rayscale runs: {runs}")
    for note in notes:
        print(f"note: {note}")


def unsatisfied_doc(task: TaskDemand) -> dict[str, Any]:
    """An unsatisfied demand as the plan writes it (selectors only when present)."""
    return {"resources": task.resources, "count": task.count, **selectors_text(task.selectors)}


def json_report(
    args: argparse.Namespace, sc: Scenario, outcomes: list[Outcome], notes: list[str]
) -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "args": vars(args),
        "scenario": scenario_summary(sc),
        "outcomes": {
            o.name: {
                **asdict(o),
                "unsatisfied": [unsatisfied_doc(t) for t in o.unsatisfied],
                "unsatisfied_tasks": o.unsatisfied_tasks,
                "launched_capacity": launched_capacity(o, sc.groups),
                "ffd_tasks_not_placed": ffd_leftover(sc, o),
                **(
                    {"ffd_tasks_not_placed_selectors_first": ffd_leftover(sc, o, True)}
                    if sc.labelled
                    else {}
                ),
            }
            for o in outcomes
        },
        "ray_over_rayscale": speedup(outcomes),
        "notes": notes,
    }


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="running worker nodes")
    parser.add_argument("--groups", type=int, default=5, help="worker groups (node types)")
    parser.add_argument("--requests", type=int, default=10000, help="pending task requests")
    parser.add_argument("--shapes", type=int, default=20, help="distinct request shapes")
    parser.add_argument("--gangs", type=int, default=2, help="pending placement groups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="rayscale runs (median)")
    parser.add_argument("--skip-ray", action="store_true", help="only time rayscale")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--labelled",
        action="store_true",
        help="give groups Ray labels, and some task shapes and every gang label selectors",
    )
    args = parser.parse_args(argv)
    if min(args.nodes, args.requests, args.gangs) < 0 or min(args.groups, args.shapes) < 1:
        parser.error("sizes must be >= 0 (groups and shapes >= 1)")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def run(args: argparse.Namespace) -> tuple[Scenario, list[Outcome], list[str]]:
    scenario = make_scenario(args)
    outcomes: list[Outcome] = []
    notes: list[str] = []
    plan_fn = load_planner()
    if plan_fn is None:
        notes.append("rayscale.planner.plan_json is not available yet: rayscale not timed")
    else:
        print(f"timing rayscale plan_json ({args.repeat} runs)", file=sys.stderr)
        outcomes.append(time_rayscale(plan_fn, cluster_state(scenario), args.repeat))
    if not args.skip_ray:
        outcomes.append(time_ray(scheduling_request(scenario)))
    return scenario, outcomes, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario, outcomes, notes = run(args)
    if args.json:
        print(json.dumps(json_report(args, scenario, outcomes, notes), indent=2))
    else:
        print_report(args, scenario, outcomes, notes)
    return 0 if outcomes else 1


if __name__ == "__main__":
    sys.exit(main())
