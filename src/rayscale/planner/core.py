"""The planning algorithm: ClusterState -> Plan, pure and deterministic.

Order of work (each step is a small function below):

1. Remove nodes above a group's max (``over_max``).
2. Lower bounds per group: launches that min and the memory target force.
3. Launch for demand: first-fit-decreasing of floor bundles (on total
   capacity), gangs and tasks (on free capacity) over the existing nodes, then
   over launched nodes; a shape that does not fit asks the launcher, which
   picks the highest-priority launchable group that can hold it, and among
   equals the one that wastes least. Repeated until a pass launches nothing,
   so the launches hold the demand when placed on the final node set.
4. Trim: drop any launched node the check shows is not needed (frugality).
5. Terminate idle nodes and pending nodes that the final placement left
   unused, within min.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rayscale.planner.packing import (
    USED_FLOOR,
    USED_GANGS,
    USED_TASKS,
    ExistingNode,
    ExistingNodes,
    GangItem,
    NodeTable,
    PassResult,
    TaskItem,
    run_pass,
)
from rayscale.planner.plan import Plan, Termination
from rayscale.planner.resources import ResourceSpace, Vector, fit_counts
from rayscale.planner.state import ClusterState, Gang, Group, Node, Shape

MEMORY_TOLERANCE = 1.10  # scale up when mean use exceeds the target by more than 10 %
_EPS = 1e-9
_UNBOUNDED = 1 << 62
_STRATEGY_ORDER = {"STRICT_PACK": 0, "STRICT_SPREAD": 1, "PACK": 2, "SPREAD": 3}
_MAX_PASSES = 8


@dataclass
class _Groups:
    """Per-group facts derived once from the state."""

    spec: dict[str, Group]
    capacity: dict[str, Vector]
    running: dict[str, int]
    pending: dict[str, int]
    block_order: list[str]

    def count(self, group: str) -> int:
        return self.running[group] + self.pending[group]


@dataclass
class _Demand:
    floor: list[TaskItem]
    floor_src: list[Shape]
    gangs: list[GangItem]
    gang_src: list[Gang]
    tasks: list[TaskItem]
    task_src: list[Shape]


@dataclass
class _Budget:
    """Launch counts and the headroom left for more (max, max_nodes, Conservative)."""

    groups: _Groups
    conservative: bool
    global_room: int
    launched: dict[str, int] = field(default_factory=dict)

    def headroom(self, group: str) -> int:
        spec = self.groups.spec[group]
        done = self.launched.get(group, 0)
        upper = _UNBOUNDED if spec.max is None else spec.max
        room = upper - self.groups.count(group) - done
        if self.conservative:
            room = min(room, max(1, self.groups.running[group]) - self.groups.pending[group] - done)
        room = min(room, self.global_room - sum(self.launched.values()))
        return max(0, room)


def plan(state: ClusterState) -> Plan:
    space = _space(state)
    groups, fixed, scalable, terminations = _classify(state, space)
    scale = _scale(space, state)
    demand = _demand(state, space, scale)
    memory_need = {g: _memory_need(state, g, groups) for g in groups.spec}
    budget = _Budget(
        groups,
        conservative=state.options.upscaling_mode == "Conservative",
        global_room=_global_room(state, groups),
    )
    lower = _lower_bounds(groups, memory_need, budget)
    budget.launched = dict(lower)

    candidates = _idle_candidates(state, scalable, groups, space)
    existing = _ordered_existing(fixed, scalable, candidates, space, groups, scale)
    launcher = _Launcher(budget, groups, space, scale)

    result = _converge(existing, space, groups, demand, budget, launcher)
    quota = (
        [i.count - left for i, left in zip(demand.floor, result.floor_left, strict=True)],
        [g.count - left for g, left in zip(demand.gangs, result.gang_left, strict=True)],
        [t.count - left for t, left in zip(demand.tasks, result.task_left, strict=True)],
    )
    launched = _trim(budget.launched, lower, existing, space, groups, demand, quota, scale)
    final = run_pass(
        _table(existing, space, groups, launched),
        demand.floor, demand.gangs, demand.tasks, quota, None, groups.capacity,
    )

    terminations += _scale_down(
        state, groups, existing, final, candidates, launched, memory_need
    )
    plan_ = Plan(
        launch={g: launched[g] for g in groups.block_order if launched.get(g, 0) > 0},
        why=_reasons(final, groups, lower, memory_need, launched),
        terminate=terminations,
    )
    _report_unplaced(plan_, demand, result, space, groups, existing)
    return plan_


# ---------------------------------------------------------------- preparation


def _space(state: ClusterState) -> ResourceSpace:
    names: set[str] = set()
    for group in state.groups.values():
        names.update(group.resources)
    for node in state.nodes:
        names.update(node.total or {})
        names.update(node.available or {})
    for shape in (*state.demand.tasks, *state.demand.floor):
        names.update(shape.resources)
    for gang in state.demand.gangs:
        for bundle in gang.bundles:
            names.update(bundle)
    return ResourceSpace(names)


def _classify(
    state: ClusterState, space: ResourceSpace
) -> tuple[_Groups, list[Node], list[Node], list[Termination]]:
    """Split nodes into fixed and scalable ones, and remove those above max."""
    capacity = {name: space.vector(g.resources) for name, g in state.groups.items()}
    fixed = [n for n in state.nodes if n.group not in state.groups and n.status != "terminating"]
    by_group: dict[str, list[Node]] = {g: [] for g in state.groups}
    for node in state.nodes:
        if node.group in state.groups and node.status != "terminating":
            by_group[node.group].append(node)

    terminations: list[Termination] = []
    scalable: list[Node] = []
    for name in sorted(by_group):
        nodes = by_group[name]
        limit = state.groups[name].max
        if limit is not None and len(nodes) > limit:
            work = space.work_mask()
            # pending first, then idle (longest idle first), then busy ones
            ordered = sorted(nodes, key=lambda n: _over_max_key(n, space, capacity[name], work))
            excess = len(nodes) - limit
            terminations += [Termination(n.id, "over_max") for n in ordered[:excess]]
            nodes = ordered[excess:]
        scalable += nodes

    groups = _Groups(
        spec=dict(state.groups),
        capacity=capacity,
        running={g: sum(1 for n in scalable if n.group == g and n.status == "running")
                 for g in state.groups},
        pending={g: sum(1 for n in scalable if n.group == g and n.status == "pending")
                 for g in state.groups},
        block_order=sorted(state.groups, key=lambda g: (-state.groups[g].priority, g)),
    )
    return groups, fixed, scalable, terminations


def _over_max_key(
    node: Node, space: ResourceSpace, capacity: Vector, work: np.ndarray
) -> tuple[int, float, str]:
    if node.status == "pending":
        return (0, 0.0, node.id)
    if _is_idle(node, space, capacity, work):
        return (1, -(node.idle_s or 0.0), node.id)
    return (2, 0.0, node.id)


def _is_idle(node: Node, space: ResourceSpace, capacity: Vector, work: np.ndarray) -> bool:
    """Ray reports idle time; a node that holds any work resource is busy regardless."""
    if not node.idle_s:
        return False
    total = space.vector(node.total) if node.total is not None else capacity
    if node.available is None:
        return True
    available = space.vector(node.available)
    return bool(np.all(available[work] >= total[work]))


def _demand(state: ClusterState, space: ResourceSpace, scale: np.ndarray) -> _Demand:
    """Merge identical shapes and sort everything decreasing."""

    def shapes(items: Iterable[Shape]) -> tuple[list[TaskItem], list[Shape]]:
        merged: dict[bytes, tuple[Vector, int, Shape]] = {}
        for item in items:
            if item.count == 0:
                continue
            vec = space.vector(item.resources)
            key = vec.tobytes()
            if key in merged:
                v, c, src = merged[key]
                merged[key] = (v, c + item.count, src)
            else:
                merged[key] = (vec, item.count, item)
        ordered = sorted(merged.values(), key=lambda e: _size_key(e[0], scale))
        return [TaskItem(v, c) for v, c, _ in ordered], [s for _, _, s in ordered]

    floor, floor_src = shapes(state.demand.floor)
    tasks, task_src = shapes(state.demand.tasks)

    gang_merged: dict[tuple[str, bytes], tuple[GangItem, Gang]] = {}
    for gang in state.demand.gangs:
        if gang.count == 0:
            continue
        bundles = tuple(
            sorted((space.vector(b) for b in gang.bundles), key=lambda v: _size_key(v, scale))
        )
        key = (gang.strategy, b"|".join(b.tobytes() for b in bundles))
        if key in gang_merged:
            item, src = gang_merged[key]
            gang_merged[key] = (GangItem(item.strategy, item.bundles, item.count + gang.count), src)
        else:
            gang_merged[key] = (GangItem(gang.strategy, bundles, gang.count), gang)
    gangs_sorted = sorted(
        gang_merged.values(),
        key=lambda e: (_STRATEGY_ORDER[e[0].strategy], *_size_key(e[0].total, scale)),
    )
    return _Demand(
        floor=floor,
        floor_src=floor_src,
        gangs=[g for g, _ in gangs_sorted],
        gang_src=[s for _, s in gangs_sorted],
        tasks=tasks,
        task_src=task_src,
    )


def _scale(space: ResourceSpace, state: ClusterState) -> np.ndarray:
    """Per-dimension normaliser: the largest capacity any group or node has."""
    vectors = [space.vector(g.resources) for g in state.groups.values()]
    vectors += [space.vector(n.total) for n in state.nodes if n.total]
    if not vectors:
        return np.ones(space.size)
    biggest = np.max(np.stack(vectors), axis=0).astype(float)
    return np.where(biggest > 0, biggest, 1.0)


def _size_key(vec: Vector, scale: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Sort key for 'decreasing': normalised size, then the vector itself."""
    return (-float(np.sum(vec / scale)), tuple(-int(x) for x in vec))


def _global_room(state: ClusterState, groups: _Groups) -> int:
    if state.options.max_nodes is None:
        return _UNBOUNDED
    workers = sum(groups.count(g) for g in groups.spec)
    return state.options.max_nodes - workers


def _memory_need(state: ClusterState, group: str, groups: _Groups) -> int:
    """Nodes beyond the running ones that the physical-memory target asks for."""
    target = groups.spec[group].memory_target_fraction
    if target is None:
        return 0
    running = [n for n in state.nodes if n.group == group and n.status == "running"]
    fractions = [n.memory_used_fraction for n in running if n.memory_used_fraction is not None]
    if not fractions:
        return 0
    mean = sum(fractions) / len(fractions)
    if mean <= target * MEMORY_TOLERANCE:
        return 0
    n = len(running)
    return max(0, math.ceil(n * mean / target - _EPS) - n)


def _lower_bounds(
    groups: _Groups, memory_need: Mapping[str, int], budget: _Budget
) -> dict[str, int]:
    """Launches forced by min (always) and by memory (within headroom)."""
    lower: dict[str, int] = {}
    for g in groups.block_order:
        lower[g] = max(0, groups.spec[g].min - groups.count(g))
    budget.launched = dict(lower)
    for g in groups.block_order:
        extra = max(0, memory_need[g] - groups.pending[g] - lower[g])
        extra = min(extra, budget.headroom(g))
        lower[g] += extra
        budget.launched[g] = lower[g]
    return lower


def _idle_candidates(
    state: ClusterState, scalable: list[Node], groups: _Groups, space: ResourceSpace
) -> dict[str, Node]:
    """Running nodes idle past their timeout: terminable unless placement needs them."""
    work = space.work_mask()
    out: dict[str, Node] = {}
    for node in scalable:
        if node.status != "running":
            continue
        spec = groups.spec[node.group]
        timeout = spec.idle_timeout_s
        if timeout is None:
            timeout = state.options.idle_timeout_s
        if _is_idle(node, space, groups.capacity[node.group], work) and (
            node.idle_s or 0.0
        ) >= timeout:
            out[node.id] = node
    return out


def _ordered_existing(
    fixed: list[Node],
    scalable: list[Node],
    candidates: Mapping[str, Node],
    space: ResourceSpace,
    groups: _Groups,
    scale: np.ndarray,
) -> ExistingNodes:
    """Placement order: busy/kept nodes (fullest first), idle candidates, pending."""
    entries: list[ExistingNode] = []
    for node in (*fixed, *scalable):
        if node.status == "pending":
            cap = groups.capacity[node.group]
            entries.append(ExistingNode(node.id, node.group, cap, cap))
            continue
        default = groups.capacity.get(node.group, space.zeros())
        total = space.vector(node.total) if node.total is not None else default
        free = space.vector(node.available) if node.available is not None else total
        entries.append(ExistingNode(node.id, node.group, free, total))
    unordered = ExistingNodes.of(entries, space.size)
    size = (unordered.free / scale).sum(axis=1) if entries else np.zeros(0)
    status = {n.id: n for n in (*fixed, *scalable)}

    def key(i: int) -> tuple[int, float, str]:
        node = status[entries[i].id]
        if node.status == "pending":
            return (2, 0.0, node.id)
        if node.id in candidates:
            return (1, node.idle_s or 0.0, node.id)
        return (0, float(size[i]), node.id)

    order = sorted(range(len(entries)), key=key)
    return ExistingNodes(
        [entries[i] for i in order], unordered.free[order], unordered.total[order]
    )



# ------------------------------------------------------------------ launching


class _Launcher:
    """Chooses the group for nodes that a shape needs: priority, then least waste."""

    def __init__(
        self, budget: _Budget, groups: _Groups, space: ResourceSpace, scale: np.ndarray
    ) -> None:
        self.budget = budget
        self.groups = groups
        self.scale = scale
        self.gpu = space.index.get("GPU")

    def __call__(self, shape: Vector, remaining: int) -> tuple[str, int] | None:
        options: list[tuple[tuple[object, ...], str, int]] = []
        top: int | None = None
        for g in self.groups.block_order:  # highest priority first
            spec = self.groups.spec[g]
            if top is not None and spec.priority < top:
                break
            cap = self.groups.capacity[g]
            if not spec.launchable or not np.all(cap >= shape):
                continue
            room = self.budget.headroom(g)
            if room == 0:
                continue
            per = int(fit_counts(cap[None, :], shape, remaining)[0])
            nodes = min(room, -(-remaining // per))
            served = min(remaining, nodes * per)
            waste = float(np.sum((nodes * cap - served * shape) / self.scale)) / served
            gpu_idle = self.gpu is not None and cap[self.gpu] > 0 and shape[self.gpu] == 0
            top = spec.priority
            options.append(((gpu_idle, round(waste, 9), nodes, g), g, nodes))
        if not options:
            return None
        _, group, nodes = min(options, key=lambda o: o[0])
        self.budget.launched[group] = self.budget.launched.get(group, 0) + nodes
        return group, nodes


def _table(
    existing: ExistingNodes, space: ResourceSpace, groups: _Groups, launched: dict[str, int]
) -> NodeTable:
    return NodeTable.build(existing, groups.block_order, groups.capacity, launched)


def _converge(
    existing: ExistingNodes,
    space: ResourceSpace,
    groups: _Groups,
    demand: _Demand,
    budget: _Budget,
    launcher: _Launcher,
) -> PassResult:
    """Place with launching until a pass over the final node set launches nothing."""
    result: PassResult | None = None
    for _ in range(_MAX_PASSES):
        before = dict(budget.launched)
        table = _table(existing, space, groups, before)
        result = run_pass(
            table, demand.floor, demand.gangs, demand.tasks, None, launcher, groups.capacity
        )
        if budget.launched == before:
            break
    assert result is not None
    return result


def _trim(
    launched: dict[str, int],
    lower: Mapping[str, int],
    existing: ExistingNodes,
    space: ResourceSpace,
    groups: _Groups,
    demand: _Demand,
    quota: tuple[list[int], list[int], list[int]],
    scale: np.ndarray,
) -> dict[str, int]:
    """Drop launched nodes the demand does not need; least preferred groups first."""
    current = dict(launched)

    def sufficient(counts: dict[str, int]) -> bool:
        table = _table(existing, space, groups, counts)
        result = run_pass(
            table, demand.floor, demand.gangs, demand.tasks, quota, None, groups.capacity
        )
        return result.complete

    order = sorted(
        (g for g in groups.block_order if current.get(g, 0) > lower.get(g, 0)),
        key=lambda g: (groups.spec[g].priority, -float(np.sum(groups.capacity[g] / scale)), g),
    )
    for g in order:
        low, high = lower.get(g, 0), current[g]
        if not sufficient({**current, g: high - 1}):
            continue
        # more may go: binary search the fewest that still hold the demand
        high -= 1
        while low < high:
            mid = (low + high) // 2
            if sufficient({**current, g: mid}):
                high = mid
            else:
                low = mid + 1
        current[g] = high
    return current


# ----------------------------------------------------------------- scale-down


def _scale_down(
    state: ClusterState,
    groups: _Groups,
    existing: ExistingNodes,
    final: PassResult,
    candidates: Mapping[str, Node],
    launched: Mapping[str, int],
    memory_need: Mapping[str, int],
) -> list[Termination]:
    """Unused pending nodes first, then unused idle nodes (longest idle first), within min."""
    used = {existing[i].id for i in range(len(existing)) if final.table.used[i]}
    status = {n.id: n.status for n in state.nodes}
    out: list[Termination] = []
    for g in sorted(groups.spec):
        allowed = groups.count(g) - groups.spec[g].min
        pending_unused = [
            e.id for e in existing.nodes
            if e.group == g and e.id not in used and status[e.id] == "pending"
        ]
        # pending nodes still count toward the memory target
        spare_for_memory = groups.pending[g] + launched.get(g, 0) - memory_need[g]
        cancel = max(0, min(len(pending_unused), allowed, spare_for_memory))
        out += [Termination(i, "unneeded_pending") for i in reversed(pending_unused[-cancel:])] \
            if cancel else []
        allowed -= cancel
        idle = sorted(
            (n for n in candidates.values() if n.group == g and n.id not in used),
            key=lambda n: (-(n.idle_s or 0.0), n.id),
        )
        out += [Termination(n.id, "idle") for n in idle[: max(0, allowed)]]
    return out



# -------------------------------------------------------------------- reports


def _reasons(
    final: PassResult,
    groups: _Groups,
    lower: Mapping[str, int],
    memory_need: Mapping[str, int],
    launched: Mapping[str, int],
) -> dict[str, list[str]]:
    table = final.table
    why: dict[str, list[str]] = {}
    for g in groups.block_order:
        if launched.get(g, 0) <= 0:
            continue
        bits = 0
        for row in range(table.existing, len(table.groups)):
            if table.groups[row] == g:
                bits |= int(table.used[row])
        reasons = []
        if groups.spec[g].min > groups.count(g):
            reasons.append("min")
        for bit, name in ((USED_FLOOR, "floor"), (USED_GANGS, "gangs"), (USED_TASKS, "tasks")):
            if bits & bit:
                reasons.append(name)
        if memory_need[g] > groups.pending[g] and lower.get(g, 0) > 0:
            reasons.append("memory")
        why[g] = reasons or ["min"]
    return why


def _report_unplaced(
    plan_: Plan,
    demand: _Demand,
    result: PassResult,
    space: ResourceSpace,
    groups: _Groups,
    existing: ExistingNodes,
) -> None:
    """Sort what could not be placed into infeasible (never) and capped (not now)."""
    holders = [c for g, c in groups.capacity.items() if groups.spec[g].max != 0]
    holders += [e.total for e in existing.nodes]

    def holdable(vec: Vector) -> bool:
        return any(bool(np.all(h >= vec)) for h in holders)

    for kind, items, sources, left in (
        ("floor", demand.floor, demand.floor_src, result.floor_left),
        ("tasks", demand.tasks, demand.task_src, result.task_left),
    ):
        for item, src, n in zip(items, sources, left, strict=True):
            if n > 0:
                target = plan_.capped if holdable(item.shape) else plan_.infeasible
                bucket = target.floor if kind == "floor" else target.tasks
                bucket.append(src.model_copy(update={"count": n}))
    for gang, gsrc, n in zip(demand.gangs, demand.gang_src, result.gang_left, strict=True):
        if n <= 0:
            continue
        pieces = [gang.total] if gang.strategy == "STRICT_PACK" else list(gang.bundles)
        target = plan_.capped if all(holdable(p) for p in pieces) else plan_.infeasible
        target.gangs.append(gsrc.model_copy(update={"count": n}))
