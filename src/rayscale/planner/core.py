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

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from rayscale.planner.label_dims import LabelDims
from rayscale.planner.packing import (
    USED_FLOOR,
    USED_GANGS,
    USED_TASKS,
    ExistingNodes,
    GangItem,
    NodeTable,
    PassResult,
    TaskItem,
    run_pass,
)
from rayscale.planner.plan import Plan, Termination
from rayscale.planner.resources import INT64_MAX as _INT64_MAX
from rayscale.planner.resources import ResourceSpace, Vector, fit_counts
from rayscale.planner.state import ClusterState, Gang, Group, Node, Resources, Shape

MEMORY_TOLERANCE = 1.10  # scale up when mean use exceeds the target by more than 10 %
_EPS = 1e-9
_UNBOUNDED = 1 << 62
_STRATEGY_ORDER = {"STRICT_PACK": 0, "STRICT_SPREAD": 1, "PACK": 2, "SPREAD": 3}
_MAX_PASSES = 12
# Floats that are whole multiples of _UNIT**-1 add up exactly, in any order,
# while their sum stays below _UNITS_MAX (2**53 units).
_UNIT = float(2**30)
_UNITS_MAX = float(2**23)


@dataclass
class _Groups:
    """Per-group facts derived once from the state."""

    spec: dict[str, Group]
    capacity: dict[str, Vector]
    running: dict[str, int]
    pending: dict[str, int]
    block_order: list[str]
    labels: LabelDims

    def count(self, group: str) -> int:
        return self.running[group] + self.pending[group]


ItemT = TypeVar("ItemT", TaskItem, GangItem)
SourceT = TypeVar("SourceT", Shape, Gang)


@dataclass
class _Items(Generic[ItemT, SourceT]):
    """One kind of demand (floor bundles, gangs or tasks), in the checking order.

    Placement works on ``items``: runs of consecutive copies of one shape (or
    gang) in the checking order, each made of whole document entries
    (``runs[i]``, indices into ``counts``, in document order). Reports merge
    identical shapes into one line each: ``line[e]`` is the line of entry
    ``e``, ``sources[line]`` the first entry of that line as the document
    wrote it.
    """

    items: list[ItemT]
    runs: list[list[int]]
    counts: list[int]
    line: list[int]
    sources: list[SourceT]

    def quota(self, left: Sequence[int]) -> list[int]:
        """Copies to place per run when ``left[i]`` copies of run ``i`` cannot be placed.

        Which copies go unplaced is a choice: the checking order (like
        tests/plancheck.py) counts them off the *earliest* document entries of
        their line, so the quota does the same.
        """
        unplaced = [0] * len(self.sources)
        for run, n in zip(self.runs, left, strict=True):
            unplaced[self.line[run[0]]] += n
        keep = list(self.counts)
        for e in range(len(self.counts)):  # document order
            cut = min(keep[e], unplaced[self.line[e]])
            keep[e] -= cut
            unplaced[self.line[e]] -= cut
        return [sum(keep[e] for e in run) for run in self.runs]

    def unplaced(self, quota: Sequence[int]) -> list[int]:
        """Copies per report line that the quota leaves out."""
        out = [0] * len(self.sources)
        for item, run, q in zip(self.items, self.runs, quota, strict=True):
            out[self.line[run[0]]] += item.count - q
        return out


@dataclass
class _Demand:
    floor: _Items[TaskItem, Shape]
    gangs: _Items[GangItem, Gang]
    tasks: _Items[TaskItem, Shape]

    def quota(
        self, left: tuple[Sequence[int], Sequence[int], Sequence[int]]
    ) -> tuple[list[int], list[int], list[int]]:
        return (
            self.floor.quota(left[0]), self.gangs.quota(left[1]), self.tasks.quota(left[2])
        )


@dataclass(frozen=True)
class _QuotaLine:
    """One key of one quota: what is left, and what a node of each group takes."""

    quota: str
    left: float
    cost: dict[str, float]  # group -> its cost (> 0 only)


class _Launched(dict[str, int]):
    """Launch counts by group that know when they changed (:attr:`version`), so that
    what the launches take from each quota is summed once per change, not once per
    question (headroom is asked per group, many times a pass)."""

    version = 0

    def __setitem__(self, group: str, count: int) -> None:
        self.version += 1
        super().__setitem__(group, count)

    def __delitem__(self, group: str) -> None:
        self.version += 1
        super().__delitem__(group)

    def _changed(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("launch counts change item by item")

    update = pop = popitem = clear = setdefault = _changed


@dataclass
class _Budget:
    """Launch counts and the headroom left for more (max, max_nodes, Conservative,
    quotas)."""

    groups: _Groups
    conservative: bool
    global_room: int
    launched: dict[str, int] = field(default_factory=dict)
    quotas: list[_QuotaLine] = field(default_factory=list)
    # (the launch counts, their version) -> what they take from each quota line
    _used: tuple[int, int, list[float]] = (0, -1, [])

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "launched" and not isinstance(value, _Launched):
            value = _Launched(value)
        object.__setattr__(self, name, value)

    def _quota_used(self) -> list[float]:
        launched = self.launched
        assert isinstance(launched, _Launched)
        key, version, used = self._used
        if key != id(launched) or version != launched.version:
            used = [sum(launched.get(g, 0) * c for g, c in line.cost.items())
                    for line in self.quotas]
            self._used = (id(launched), launched.version, used)
        return used

    def headroom(self, group: str) -> int:
        return max(0, min(room for room, _ in self._rooms(group)))

    def limit(self, group: str) -> str:
        """The limit that leaves ``group`` the least room (``backoff`` if not launchable)."""
        if not self.groups.spec[group].launchable:
            return "backoff"
        return min(self._rooms(group), key=lambda r: r[0])[1]

    def quota_room(self, group: str) -> int:
        return min((room for room, _ in self._quota_rooms(group)), default=_UNBOUNDED)

    def _rooms(self, group: str) -> Iterator[tuple[int, str]]:
        spec = self.groups.spec[group]
        done = self.launched.get(group, 0)
        upper = _UNBOUNDED if spec.max is None else spec.max
        yield upper - self.groups.count(group) - done, "max"
        if self.conservative:
            yield (max(1, self.groups.running[group]) - self.groups.pending[group] - done,
                   "conservative")
        yield self.global_room - sum(self.launched.values()), "max_nodes"
        yield from self._quota_rooms(group)

    def _quota_rooms(self, group: str) -> Iterator[tuple[int, str]]:
        if not self.quotas:
            return
        for line, used in zip(self.quotas, self._quota_used(), strict=True):
            cost = line.cost.get(group)
            if cost is None:
                continue
            # a small tolerance: 0.3 left of 0.1 each is 3 nodes, not 2.9999; a cost
            # so small that the ratio overflows leaves the quota no limit
            ratio = (line.left - used) / cost + 1e-9
            room = _UNBOUNDED if ratio >= _UNBOUNDED else max(-_UNBOUNDED, math.floor(ratio))
            yield room, f"quota:{line.quota}"


def _quota_lines(state: ClusterState) -> list[_QuotaLine]:
    """Every quota key that some group's nodes take from."""
    lines = []
    for quota in state.quotas:
        for key, left in quota.left.items():
            cost = {g: float(spec.cost[key]) for g, spec in state.groups.items()
                    if spec.cost.get(key, 0) > 0}
            if cost:
                lines.append(_QuotaLine(quota.name, float(left), cost))
    return lines


def plan(state: ClusterState) -> Plan:
    """The plan for a state (plan-format.md), pure and deterministic."""
    with _collector_paused():
        return _plan(state)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while planning.

    Planning a 10,000-node state allocates a few hundred thousand small,
    short-lived, acyclic objects (per-node lists, tuples, ids). Every 700
    allocations the collector runs, and now and then one of those runs walks
    the whole heap, the caller's own data included: 20-30 ms each time, with
    nothing to collect. With the collector paused, these objects are still
    freed at once by reference counting; the collector runs once, later.
    (If another thread pauses the collector meanwhile, this resumes it.)
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _plan(state: ClusterState) -> Plan:
    facts = _NodeFacts.of(state)
    space = facts.space
    groups, fixed, scalable, terminations = _classify(state, space, facts)
    scale = _scale(space, state, facts)
    given = _given_scale(state, facts)
    demand = _demand(state, space, given, groups.labels)
    memory_need = {g: _memory_need(state, g, groups) for g in groups.spec}
    budget = _Budget(
        groups,
        conservative=state.options.upscaling_mode == "Conservative",
        global_room=_global_room(state, groups),
        quotas=_quota_lines(state),
    )
    lower = _lower_bounds(groups, memory_need, budget)
    budget.launched = dict(lower)

    candidates = _idle_candidates(state, scalable, groups, facts)
    existing = _ordered_existing(state, fixed, scalable, candidates, facts, groups, given)
    launcher = _Launcher(budget, groups, space, scale)
    passes = _Passes(existing, groups, demand)

    result, converged = _converge(passes, budget, launcher)
    left = (result.floor_left, result.gang_left, result.task_left)
    quota = demand.quota(left)
    if quota != _placed(demand, left):
        result, converged, quota = _settle(passes, budget, launcher, quota)
    passes.quota = quota
    if converged:
        # The last pass launched nothing: it placed exactly the quota on these launches.
        passes.remember(budget.launched, result.table)
    launched = _trim(budget.launched, lower, passes, groups, scale)
    final = passes.check(launched)

    terminations += _scale_down(groups, existing, final, facts, candidates, launched, memory_need)
    plan_ = Plan(
        launch={g: launched[g] for g in groups.block_order if launched.get(g, 0) > 0},
        why=_reasons(final, groups, lower, memory_need, launched),
        terminate=terminations,
    )
    _report_unplaced(plan_, demand, quota, groups, existing)
    if not plan_.capped.empty:
        budget.launched = dict(launched)
        plan_.limited = _limits(plan_, budget, groups, space)
    return plan_


# ---------------------------------------------------------------- preparation


def _space(
    state: ClusterState,
    totals: list[Resources | None],
    availables: list[Resources | None],
    labels: LabelDims,
) -> ResourceSpace:
    names: set[str] = set(labels.names())
    for group in state.groups.values():
        names.update(group.resources)
    names = names.union(*(m for m in totals if m), *(m for m in availables if m))
    for shape in (*state.demand.tasks, *state.demand.floor):
        names.update(shape.resources)
    for gang in state.demand.gangs:
        for bundle in gang.bundles:
            names.update(bundle)
    space = ResourceSpace(names)
    labels.bind(space)
    return space


Ints = npt.NDArray[np.int64]
_RUNNING, _PENDING, _TERMINATING = 0, 1, 2
_STATUS = {"running": _RUNNING, "pending": _PENDING, "terminating": _TERMINATING}


@dataclass
class _NodeFacts:
    """Every node of the state as arrays (document order), converted once per plan.

    The planner asks the same few questions of every node (its group, its total
    and free capacity, whether it is idle); answering them with one numpy
    operation over all nodes, rather than one Python call per node, is most of
    what keeps a 10,000-node plan fast.
    """

    space: ResourceSpace
    labels: LabelDims
    ids: list[str]
    groups: list[str]
    group_names: list[str]  # sorted names of the scalable groups
    group: npt.NDArray[np.int64]  # index into group_names, -1 for a fixed node
    status: npt.NDArray[np.int8]
    idle_s: npt.NDArray[np.float64]
    has_total: npt.NDArray[np.bool_]
    has_available: npt.NDArray[np.bool_]
    totals: list[Resources | None]  # the maps as the document gave them
    availables: list[Resources | None]
    total: npt.NDArray[np.int64]  # the node's own total (zeros when not given)
    available: npt.NDArray[np.int64]  # the node's own available (zeros when not given)
    total_given: npt.NDArray[np.float64]  # the same two, as given (floats)
    available_given: npt.NDArray[np.float64]
    effective_total: npt.NDArray[np.int64]  # own total, else its group's capacity, else 0
    idle: npt.NDArray[np.bool_]  # Ray says idle and no work resource is in use

    @classmethod
    def of(cls, state: ClusterState) -> _NodeFacts:
        """The facts, and the resource space of the whole state."""
        nodes = state.nodes
        totals = [x.total for x in nodes]
        availables = [x.available for x in nodes]
        labels = LabelDims.of(state)
        space = _space(state, totals, availables, labels)
        groups = [x.group for x in nodes]
        names = sorted(state.groups)
        index = {g: j for j, g in enumerate(names)}
        group = np.array([index.get(g, -1) for g in groups], dtype=np.int64)
        total, total_given = _totals(state, space, totals, groups, group)
        available, available_given = space.matrix(availables)
        has_total = np.array([m is not None for m in totals], dtype=np.bool_)
        has_available = np.array([m is not None for m in availables], dtype=np.bool_)
        effective = total.copy()
        for j, name in enumerate(names):
            effective[(group == j) & ~has_total] = space.vector(state.groups[name].resources)
        idle_s = np.array([x.idle_s or 0.0 for x in nodes], dtype=np.float64)
        work = space.work_mask()
        # A node Ray calls idle is still busy while it holds any work resource.
        holds_nothing = np.all(available[:, work] >= effective[:, work], axis=1)
        return cls(
            space=space,
            labels=labels,
            ids=[x.id for x in nodes],
            groups=groups,
            group_names=names,
            group=group,
            status=np.array([_STATUS[x.status] for x in nodes], dtype=np.int8),
            idle_s=idle_s,
            has_total=has_total,
            has_available=has_available,
            totals=totals,
            availables=availables,
            total=total,
            available=available,
            total_given=total_given,
            available_given=available_given,
            effective_total=effective,
            idle=(idle_s != 0) & (~has_available | holds_nothing),
        )


def _totals(
    state: ClusterState,
    space: ResourceSpace,
    totals: list[Resources | None],
    groups: list[str],
    group: Ints,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """:meth:`ResourceSpace.matrix` of the node totals.

    Most nodes report exactly their group's resources: those rows are copied
    from the group (one dict comparison per node) instead of converted.
    """
    resources = {name: g.resources for name, g in state.groups.items()}
    plain = np.array(
        [t is not None and t == resources.get(g) for t, g in zip(totals, groups, strict=True)],
        dtype=np.bool_,
    )
    if not plain.any():
        return space.matrix(totals)
    others = np.flatnonzero(~plain)
    fixed = np.zeros((len(totals), space.size), dtype=np.int64)
    given = np.zeros((len(totals), space.size), dtype=np.float64)
    fixed[others], given[others] = space.matrix([totals[i] for i in others.tolist()])
    for j, name in enumerate(sorted(resources)):  # group holds indices into sorted names
        rows = plain & (group == j)
        if rows.any():
            fixed[rows] = space.vector(resources[name])
            given[rows] = [float(resources[name].get(n, 0)) for n in space.names]
    return fixed, given


def _classify(
    state: ClusterState, space: ResourceSpace, facts: _NodeFacts
) -> tuple[_Groups, Ints, Ints, list[Termination]]:
    """Split nodes into fixed and scalable ones (as indices), and remove those above max."""
    capacity = {
        name: facts.labels.node(space.vector(g.resources), g.labels)
        for name, g in state.groups.items()
    }
    live = facts.status != _TERMINATING
    fixed = np.flatnonzero(live & (facts.group < 0))

    terminations: list[Termination] = []
    scalable: list[Ints] = []
    running: dict[str, int] = {}
    pending: dict[str, int] = {}
    for j, name in enumerate(facts.group_names):
        rows = np.flatnonzero(live & (facts.group == j))
        limit = state.groups[name].max
        if limit is not None and rows.size > limit:
            # pending first, then idle (longest idle first), then busy ones
            ordered = sorted(rows.tolist(), key=lambda i: _over_max_key(i, facts))
            excess = rows.size - limit
            terminations += [Termination(facts.ids[i], "over_max") for i in ordered[:excess]]
            rows = np.array(ordered[excess:], dtype=np.int64)
        scalable.append(rows)
        running[name] = int(np.count_nonzero(facts.status[rows] == _RUNNING))
        pending[name] = int(np.count_nonzero(facts.status[rows] == _PENDING))

    groups = _Groups(
        spec=dict(state.groups),
        capacity=capacity,
        running={g: running[g] for g in state.groups},
        pending={g: pending[g] for g in state.groups},
        block_order=sorted(state.groups, key=lambda g: (-state.groups[g].priority, g)),
        labels=facts.labels,
    )
    return groups, fixed, np.concatenate([np.zeros(0, np.int64), *scalable]), terminations


def _over_max_key(i: int, facts: _NodeFacts) -> tuple[int, float, str]:
    if facts.status[i] == _PENDING:
        return (0, 0.0, facts.ids[i])
    if facts.idle[i]:
        return (1, -float(facts.idle_s[i]), facts.ids[i])
    return (2, 0.0, facts.ids[i])


def _demand(
    state: ClusterState, space: ResourceSpace, given: Mapping[str, float], labels: LabelDims
) -> _Demand:
    """Everything in the checking order, identical shapes merged into runs and lines."""
    return _Demand(
        floor=_shape_items(state.demand.floor, space, given, labels),
        gangs=_gang_items(state.demand.gangs, space, given, labels),
        tasks=_shape_items(state.demand.tasks, space, given, labels),
    )


def _given_scale(state: ClusterState, facts: _NodeFacts) -> dict[str, float]:
    """The largest amount of each resource that a group or a node total has, as given.

    Sizes in the checking order are computed from the amounts as the document
    gives them, as a plain-float checker (tests/plancheck.py) would compute
    them, so that equal sizes compare equal in both and ties keep document
    order in both.
    """
    out: dict[str, float] = {}
    for group in state.groups.values():
        for name, amount in group.resources.items():
            out[name] = max(out.get(name, 0.0), float(amount))
    rows = facts.has_total & facts.total.any(axis=1)
    if rows.any():
        biggest = facts.total_given[rows].max(axis=0)
        for j, name in enumerate(facts.space.names):
            if biggest[j] > 0:
                out[name] = max(out.get(name, 0.0), float(biggest[j]))
    return {name: amount if amount > 0 else 1.0 for name, amount in out.items()}


def _given_size(resources: Mapping[str, float], given: Mapping[str, float]) -> float:
    """Normalised size, summed in the map's own order (the checking order's size)."""
    return sum(amount / given.get(name, 1.0) for name, amount in resources.items())


def _shape_items(
    shapes: Sequence[Shape], space: ResourceSpace, given: Mapping[str, float], labels: LabelDims
) -> _Items[TaskItem, Shape]:
    """Entries with a label selector, then the others, each decreasing by size; equal
    sizes keep document order (a stable sort)."""
    entries = [s for s in shapes if s.count > 0]
    vectors = [
        labels.demand(space.vector(s.resources), s.alternatives()) if s.label_selector
        else space.vector(s.resources)
        for s in entries
    ]
    lines: dict[bytes, int] = {}
    sources: list[Shape] = []
    line: list[int] = []
    for entry, vec in zip(entries, vectors, strict=True):
        key = vec.tobytes()
        if key not in lines:
            lines[key] = len(sources)
            sources.append(entry)
        line.append(lines[key])
    sizes = [_given_size(s.resources, given) for s in entries]
    runs: list[list[int]] = []
    # demand with a label selector first: it can use fewer nodes than the rest
    free = [not s.label_selector for s in entries]
    for e in sorted(range(len(entries)), key=lambda e: (free[e], -sizes[e])):
        if runs and line[runs[-1][-1]] == line[e]:
            runs[-1].append(e)
        else:
            runs.append([e])
    return _by_placement(_Items(
        items=[TaskItem(vectors[r[0]], sum(entries[e].count for e in r)) for r in runs],
        runs=runs,
        counts=[s.count for s in entries],
        line=line,
        sources=sources,
    ))


def _gang_items(
    gangs: Sequence[Gang], space: ResourceSpace, given: Mapping[str, float], labels: LabelDims
) -> _Items[GangItem, Gang]:
    """Gangs by strategy, those with bundle selectors first, then decreasing by size;
    bundles in a gang decreasing too."""
    entries = [g for g in gangs if g.count > 0]
    placed: list[tuple[str, tuple[Vector, ...]]] = []  # what placement sees, per entry
    lines: dict[tuple[str, bytes], int] = {}
    sources: list[Gang] = []
    line: list[int] = []
    sizes: list[float] = []
    for gang in entries:
        vectors = [
            labels.demand(space.vector(b), gang.bundle_alternatives(i))
            for i, b in enumerate(gang.bundles)
        ]
        bundle_sizes = [_given_size(b, given) for b in gang.bundles]
        order = sorted(range(len(vectors)), key=lambda i: -bundle_sizes[i])
        placed.append((gang.strategy, tuple(vectors[i] for i in order)))
        key = (gang.strategy, b"|".join(v.tobytes() for v in vectors))
        if key not in lines:
            lines[key] = len(sources)
            sources.append(gang)
        line.append(lines[key])
        sizes.append(sum(bundle_sizes))
    runs: list[list[int]] = []
    ordered = sorted(
        range(len(entries)),
        key=lambda e: (_STRATEGY_ORDER[entries[e].strategy],
                       not any(entries[e].bundle_label_selector), -sizes[e]),
    )
    for e in ordered:
        last = runs[-1][-1] if runs else None
        if last is not None and line[last] == line[e] and all(
            np.array_equal(a, b) for a, b in zip(placed[last][1], placed[e][1], strict=True)
        ):
            runs[-1].append(e)
        else:
            runs.append([e])
    return _by_placement(_Items(
        items=[
            GangItem(placed[r[0]][0], placed[r[0]][1], sum(entries[e].count for e in r))
            for r in runs
        ],
        runs=runs,
        counts=[g.count for g in entries],
        line=line,
        sources=sources,
    ))


def _by_placement(items: _Items[ItemT, SourceT]) -> _Items[ItemT, SourceT]:
    """Number report lines in placement order (reports list the largest shapes first)."""
    order: dict[int, int] = {}
    for run in items.runs:
        order.setdefault(items.line[run[0]], len(order))
    sources = [items.sources[old] for old in order]
    return _Items(
        items.items, items.runs, items.counts, [order[x] for x in items.line], sources
    )


def _scale(space: ResourceSpace, state: ClusterState, facts: _NodeFacts) -> np.ndarray:
    """Per-dimension normaliser: the largest capacity any group or node has."""
    vectors = [space.vector(g.resources) for g in state.groups.values()]
    if not vectors and not facts.has_total.any():
        return facts.labels.unweighted(np.ones(space.size))
    biggest = np.max(
        np.vstack([*vectors, facts.total[facts.has_total], space.zeros()[None, :]]), axis=0
    ).astype(float)
    return facts.labels.unweighted(np.where(biggest > 0, biggest, 1.0))


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
    wanted = n * mean / target - _EPS
    if not wanted < _UNBOUNDED:  # a fraction of 1e300, or a target of 1e-300
        return _UNBOUNDED
    return max(0, math.ceil(wanted) - n)


def _lower_bounds(
    groups: _Groups, memory_need: Mapping[str, int], budget: _Budget
) -> dict[str, int]:
    """Launches forced by min (always) and by memory (within headroom)."""
    lower: dict[str, int] = {}
    budget.launched = {}
    for g in groups.block_order:
        # min is kept whatever max_nodes says, but within quotas: a pod the quota
        # refuses would never start
        lower[g] = max(0, min(groups.spec[g].min - groups.count(g), budget.quota_room(g)))
        budget.launched[g] = lower[g]
    for g in groups.block_order:
        extra = max(0, memory_need[g] - groups.pending[g] - lower[g])
        extra = min(extra, budget.headroom(g))
        lower[g] += extra
        budget.launched[g] = lower[g]
    return lower


def _idle_candidates(
    state: ClusterState, scalable: Ints, groups: _Groups, facts: _NodeFacts
) -> npt.NDArray[np.bool_]:
    """Running nodes idle past their timeout (a mask over all nodes).

    They are terminated unless placement needs them.
    """
    timeout = np.array([
        state.options.idle_timeout_s if spec.idle_timeout_s is None else spec.idle_timeout_s
        for spec in (groups.spec[g] for g in facts.group_names)
    ] or [0.0])
    rows = scalable[facts.status[scalable] == _RUNNING]
    rows = rows[facts.idle[rows] & (facts.idle_s[rows] >= timeout[facts.group[rows]])]
    mask = np.zeros(len(facts.ids), dtype=np.bool_)
    mask[rows] = True
    return mask


def _ordered_existing(
    state: ClusterState,
    fixed: Ints,
    scalable: Ints,
    candidate: npt.NDArray[np.bool_],
    facts: _NodeFacts,
    groups: _Groups,
    given: Mapping[str, float],
) -> ExistingNodes:
    """Placement order: busy/kept nodes (fullest first), idle candidates, pending.

    Sort key per node: (0, normalised free size, id) for busy and kept nodes,
    (1, idle seconds, id) for idle candidates, (2, 0, id) for pending nodes.
    """
    rows = np.concatenate([fixed, scalable])
    pending = facts.status[rows] == _PENDING
    total = facts.effective_total[rows]
    free = np.where(facts.has_available[rows][:, None], facts.available[rows], total)
    if groups.labels.alternatives:
        running = np.flatnonzero(~pending)
        nodes, specs = state.nodes, state.groups
        groups.labels.add_to_rows(
            (free, total), running.tolist(),
            [_node_labels(nodes[i], specs) for i in rows[running].tolist()],
        )
    for j, g in enumerate(facts.group_names):
        # a pending node counts as the full capacity of its group, available
        of_group = pending & (facts.group[rows] == j)
        free[of_group] = total[of_group] = groups.capacity[g]
    size = _free_sizes(rows[~pending], facts, groups, given)
    value = np.zeros(rows.size)
    value[~pending] = size
    is_candidate = candidate[rows]
    kind = np.where(pending, 2, np.where(is_candidate, 1, 0))
    value = np.where(is_candidate, facts.idle_s[rows], value)
    # (numpy index arrays go through .tolist(): indexing a list with numpy
    # integers is several times slower than with ints)
    ids = [facts.ids[i] for i in rows.tolist()]
    # ids rank by Python's string order (numpy's would drop trailing NULs)
    rank = np.empty(rows.size, dtype=np.int64)
    rank[sorted(range(rows.size), key=ids.__getitem__)] = np.arange(rows.size)
    order = np.lexsort((rank, value, kind))
    return ExistingNodes(
        ids=[ids[j] for j in order.tolist()],
        groups=[facts.groups[i] for i in rows[order].tolist()],
        free=free[order],
        total=total[order],
        source=rows[order],
    )


_NO_LABELS: Mapping[str, str] = {}


def _node_labels(node: Node, groups: Mapping[str, Group]) -> Mapping[str, str]:
    """A node's labels: its own, else its group's (a fixed node: none)."""
    if node.labels is not None:
        return node.labels
    group = groups.get(node.group)
    return group.labels if group is not None else _NO_LABELS


def _free_map(i: int, facts: _NodeFacts, groups: _Groups) -> Mapping[str, float]:
    """The map a node's free capacity comes from: available, else total, else its group's."""
    free = facts.availables[i]
    if free is None:
        free = facts.totals[i]
    if free is None:
        spec = groups.spec.get(facts.groups[i])
        free = spec.resources if spec is not None else {}
    return free


def _free_sizes(
    rows: Ints, facts: _NodeFacts, groups: _Groups, given: Mapping[str, float]
) -> npt.NDArray[np.float64]:
    """Normalised free size of running nodes, as a plain-float checker computes it.

    A node's size is the sum over its free map (available, else total, else
    its group's resources), in the map's own key order, of amount / largest
    amount: the very same floats as ``sum(v / scale[k] for k, v in
    free.items())``, so that nodes of equal size tie exactly and fall back to
    their ids, as in tests/plancheck.py.

    The order of a float sum matters only when it rounds. When every term is
    a whole multiple of 2**-30 and the total stays below 2**23, no partial sum
    in any order rounds (typical: whole CPUs over a power-of-two largest
    node), and one vectorised sum is exact. Other nodes are grouped by their
    map's key order and summed in that order.
    """
    space = facts.space
    given_free = np.where(
        facts.has_available[rows][:, None],
        facts.available_given[rows],
        facts.total_given[rows],
    )
    for j, name in enumerate(facts.group_names):  # nodes without any map of their own
        bare = ~facts.has_available[rows] & ~facts.has_total[rows] & (facts.group[rows] == j)
        if bare.any():
            resources = groups.spec[name].resources
            given_free[bare] = [float(resources.get(n, 0)) for n in space.names]
    terms = given_free / np.array([given.get(n, 1.0) for n in space.names])
    size: npt.NDArray[np.float64] = terms.sum(axis=1)
    units = terms * _UNIT
    inexact = np.flatnonzero(~(np.all(units == np.floor(units), axis=1) & (size < _UNITS_MAX)))
    if inexact.size == 0:
        return size
    picked = rows[inexact].tolist()
    orders = [tuple(_free_map(i, facts, groups)) for i in picked]  # keys, in the map's order
    distinct = {order: k for k, order in enumerate(dict.fromkeys(orders))}
    which = np.fromiter(map(distinct.__getitem__, orders), dtype=np.int64, count=len(orders))
    members = np.argsort(which, kind="stable")  # rows grouped by key order
    ends = np.cumsum(np.bincount(which, minlength=len(distinct))).tolist()
    for names, k in distinct.items():
        at = inexact[members[(ends[k - 1] if k else 0) : ends[k]]]
        acc = np.zeros(at.size)
        for name in names:
            acc += terms[at, space.index[name]]
        size[at] = acc
    return size


# ------------------------------------------------------------------ launching


class _Launcher:
    """Chooses the group for nodes that a shape needs: the first label selector
    alternative a group matches, then priority, then least waste."""

    def __init__(
        self, budget: _Budget, groups: _Groups, space: ResourceSpace, scale: np.ndarray
    ) -> None:
        self.budget = budget
        self.groups = groups
        self.scale = scale
        self.gpu = space.index.get("GPU")
        self._orders: dict[bytes, list[tuple[tuple[int, int], str]]] = {}

    def _order(self, shape: Vector) -> list[tuple[tuple[int, int], str]]:
        """Groups by preference for ``shape``: (alternative, -priority), then name."""
        labels = self.groups.labels
        if not labels.alternatives:
            return [((0, -self.groups.spec[g].priority), g) for g in self.groups.block_order]
        key = shape.tobytes()
        order = self._orders.get(key)
        if order is None:
            order = sorted(
                ((labels.rank(shape, self.groups.spec[g].labels), -self.groups.spec[g].priority),
                 g)
                for g in self.groups.block_order
            )
            self._orders[key] = order
        return order

    def __call__(self, shape: Vector, remaining: int) -> tuple[str, int] | None:
        options: list[tuple[tuple[object, ...], str, int]] = []
        top: tuple[int, int] | None = None
        for level, g in self._order(shape):  # most preferred first
            spec = self.groups.spec[g]
            if top is not None and level > top:
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
            waste = float(np.sum(_spare(nodes, cap, served, shape) / self.scale)) / served
            gpu_idle = self.gpu is not None and cap[self.gpu] > 0 and shape[self.gpu] == 0
            top = level
            options.append(((gpu_idle, round(waste, 9), nodes, g), g, nodes))
        if not options:
            return None
        _, group, nodes = min(options, key=lambda o: o[0])
        self.budget.launched[group] = self.budget.launched.get(group, 0) + nodes
        return group, nodes

    def open_groups(self) -> frozenset[str]:
        """The groups that may launch one more node now."""
        return frozenset(g for g in self.groups.block_order if self.budget.headroom(g) > 0)

    def repeats(self, per_period: Mapping[str, int]) -> int:
        """How many more times ``per_period`` launches fit, every open group staying open.

        A gang's period (packing._fast_forward) launched ``per_period`` with
        these groups open; while they stay open, every launch in a repeated
        period makes the same choice (one node, same group), so the largest
        number of periods after which every open group still has room for one
        more node is the answer (headroom only shrinks as launches grow).
        """
        open_now = self.open_groups()
        base = dict(self.budget.launched)

        def still_open(times: int) -> bool:
            self.budget.launched = {
                g: base.get(g, 0) + times * per_period.get(g, 0)
                for g in set(base) | set(per_period)
            }
            try:
                return all(self.budget.headroom(g) > 0 for g in open_now)
            finally:
                self.budget.launched = dict(base)

        low, high = 0, _UNBOUNDED
        while low < high:  # the largest times with still_open(times)
            mid = (low + high + 1) // 2
            if still_open(mid):
                low = mid
            else:
                high = mid - 1
        return low

    def add(self, launches: Mapping[str, int]) -> None:
        for g, n in launches.items():
            self.budget.launched[g] = self.budget.launched.get(g, 0) + n


def _spare(nodes: int, cap: Vector, served: int, shape: Vector) -> npt.NDArray[np.float64]:
    """``nodes * cap - served * shape`` per resource, as floats, without int64 overflow."""
    if nodes * int(cap.max(initial=0)) <= _INT64_MAX and served * int(
        shape.max(initial=0)
    ) <= _INT64_MAX:
        spare: npt.NDArray[np.float64] = (nodes * cap - served * shape).astype(np.float64)
        return spare
    return np.array(
        [float(nodes * c - served * s) for c, s in zip(cap.tolist(), shape.tolist(), strict=True)]
    )


class _Passes:
    """Placement passes over "existing nodes + launched blocks", remembered by launch counts.

    The trim step asks "is this launch still sufficient?" for a few launch
    counts, and the final placement is one of those it already asked about
    (or the converged pass itself). Each pass costs a few milliseconds at
    10,000 nodes, so a pass is run at most once per launch counts.
    """

    def __init__(self, existing: ExistingNodes, groups: _Groups, demand: _Demand) -> None:
        self.existing = existing
        self.columns = existing.columns()
        self.groups = groups
        self.demand = demand
        self.quota: tuple[list[int], list[int], list[int]] | None = None
        self._seen: dict[tuple[tuple[str, int], ...], PassResult] = {}

    def table(self, launched: Mapping[str, int]) -> NodeTable:
        return NodeTable.build(
            self.existing, self.columns, self.groups.block_order, self.groups.capacity,
            dict(launched),
        )

    def place(
        self, launched: Mapping[str, int], launcher: _Launcher | None, give_up: bool = False
    ) -> PassResult:
        """One pass over the given launches; ``launcher`` may add more."""
        d = self.demand
        return run_pass(
            self.table(launched), d.floor.items, d.gangs.items, d.tasks.items, self.quota,
            launcher, self.groups.capacity, give_up,
        )

    @staticmethod
    def _key(launched: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
        return tuple(sorted((g, n) for g, n in launched.items() if n > 0))

    def remember(self, launched: Mapping[str, int], table: NodeTable) -> None:
        """Record ``table`` as the complete placement of the quota on ``launched``."""
        d = self.demand
        self._seen[self._key(launched)] = PassResult(
            [0] * len(d.floor.items), [0] * len(d.gangs.items), [0] * len(d.tasks.items), table
        )

    def used_span(self, launched: Mapping[str, int], group: str) -> int | None:
        """:meth:`NodeTable.used_span` of the complete placement on ``launched``, if known."""
        seen = self._seen.get(self._key(launched))
        return seen.table.used_span(group) if seen is not None and seen.complete else None

    def sufficient(self, launched: Mapping[str, int]) -> bool:
        """Whether these launches hold the quota (a failing pass stops early)."""
        key = self._key(launched)
        if key not in self._seen:
            self._seen[key] = self.place(launched, None, give_up=True)
        return self._seen[key].complete

    def check(self, launched: Mapping[str, int]) -> PassResult:
        """The whole pass (within quota, no launching) for these launches."""
        key = self._key(launched)
        if key not in self._seen or not self._seen[key].complete:
            self._seen[key] = self.place(launched, None)
        return self._seen[key]


def _converge(
    passes: _Passes, budget: _Budget, launcher: _Launcher
) -> tuple[PassResult, bool]:
    """Place with launching until a pass over the final node set launches nothing.

    Returns the last pass and whether it launched nothing.

    Launched nodes sit in blocks at fixed places, so a node launched late in
    a pass for a small shape can land in front of nodes that larger, earlier
    demand used; in the next pass that demand takes the new node first, and
    the small shape asks for one more: one node per pass, for as long as the
    larger demand can use them. When a group grows in three passes in a row,
    it grows geometrically instead (twice, four times, ... what the pass
    launched), so this settles in a few passes. The trim step then removes
    whatever the demand does not need.
    """
    result: PassResult | None = None
    streak: dict[str, int] = {}
    for _ in range(_MAX_PASSES):
        before = dict(budget.launched)
        result = passes.place(before, launcher)
        if budget.launched == before:
            return result, True
        for g in budget.groups.block_order:
            grown = budget.launched.get(g, 0) - before.get(g, 0)
            streak[g] = streak.get(g, 0) + 1 if grown > 0 else 0
            if streak[g] >= 3:
                extra = min(grown * (2 ** (streak[g] - 2) - 1), budget.headroom(g))
                budget.launched[g] += extra
    assert result is not None
    return result, False


def _placed(
    demand: _Demand, left: tuple[Sequence[int], Sequence[int], Sequence[int]]
) -> tuple[list[int], list[int], list[int]]:
    """Copies per run that a pass placed, given what it left."""
    def kind(items: Sequence[TaskItem | GangItem], out: Sequence[int]) -> list[int]:
        return [i.count - n for i, n in zip(items, out, strict=True)]

    return (
        kind(demand.floor.items, left[0]),
        kind(demand.gangs.items, left[1]),
        kind(demand.tasks.items, left[2]),
    )


def _left_after(
    items: Sequence[TaskItem | GangItem], quota: Sequence[int], left: Sequence[int]
) -> list[int]:
    """Copies per run not placed: those outside the quota and those the pass left."""
    return [i.count - q + n for i, q, n in zip(items, quota, left, strict=True)]


def _settle(
    passes: _Passes,
    budget: _Budget,
    launcher: _Launcher,
    quota: tuple[list[int], list[int], list[int]],
) -> tuple[PassResult, bool, tuple[list[int], list[int], list[int]]]:
    """Place the quota (capped copies counted off the earliest entries) until it holds.

    Needed only when one shape has several document entries that equal sizes
    of other shapes keep apart, and some of its copies are capped: the pass
    left copies of a later entry, the checking order counts the earliest off.
    Copies this quota still cannot place are counted off the same way.
    """
    demand = passes.demand
    result: PassResult | None = None
    for _ in range(_MAX_PASSES):
        passes.quota = quota
        before = dict(budget.launched)
        result = passes.place(before, launcher)
        if budget.launched == before and result.complete:
            return result, True, quota
        floor_q, gang_q, task_q = quota
        quota = demand.quota((
            _left_after(demand.floor.items, floor_q, result.floor_left),
            _left_after(demand.gangs.items, gang_q, result.gang_left),
            _left_after(demand.tasks.items, task_q, result.task_left),
        ))
    assert result is not None
    return result, False, quota


def _trim(
    launched: dict[str, int],
    lower: Mapping[str, int],
    passes: _Passes,
    groups: _Groups,
    scale: np.ndarray,
) -> dict[str, int]:
    """Drop launched nodes the demand does not need; least preferred groups first."""
    current = dict(launched)

    sufficient = passes.sufficient

    order = sorted(
        (g for g in groups.block_order if current.get(g, 0) > lower.get(g, 0)),
        key=lambda g: (groups.spec[g].priority, -float(np.sum(groups.capacity[g] / scale)), g),
    )
    for g in order:
        low, high = lower.get(g, 0), current[g]
        span = passes.used_span(current, g)
        if span is not None and low <= span < high - 1 and sufficient({**current, g: span}):
            # Nodes after the last one the placement used hold nothing: without
            # them the placement is the same, so every count from ``span`` up
            # holds the demand (a billion launched nodes need no 30 checks).
            high = span
        elif not sufficient({**current, g: high - 1}):
            continue
        else:
            high -= 1
        # more may go: binary search the fewest that still hold the demand
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
    groups: _Groups,
    existing: ExistingNodes,
    final: PassResult,
    facts: _NodeFacts,
    candidate: npt.NDArray[np.bool_],
    launched: Mapping[str, int],
    memory_need: Mapping[str, int],
) -> list[Termination]:
    """Unused pending nodes first, then unused idle nodes (longest idle first), within min."""
    source = existing.source
    unused = final.table.used == 0  # the existing nodes
    pending = facts.status[source] == _PENDING
    out: list[Termination] = []
    for g in sorted(groups.spec):
        j = facts.group_names.index(g)
        of_group = unused & (facts.group[source] == j)
        allowed = groups.count(g) - groups.spec[g].min
        pending_unused = [existing.ids[i] for i in np.flatnonzero(of_group & pending).tolist()]
        # pending nodes still count toward the memory target
        spare_for_memory = groups.pending[g] + launched.get(g, 0) - memory_need[g]
        cancel = max(0, min(len(pending_unused), allowed, spare_for_memory))
        out += [Termination(i, "unneeded_pending") for i in reversed(pending_unused[-cancel:])] \
            if cancel else []
        allowed -= cancel
        idle = sorted(
            source[of_group & candidate[source]].tolist(),
            key=lambda i: (-float(facts.idle_s[i]), facts.ids[i]),
        )
        out += [Termination(facts.ids[i], "idle") for i in idle[: max(0, allowed)]]
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
        bits = table.block_used(g)
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


def _limits(plan_: Plan, budget: _Budget, groups: _Groups,
            space: ResourceSpace) -> dict[str, str]:
    """Each group that could hold a capped shape and cannot launch more: its limit."""
    needs = [space.vector(s.resources) for s in (*plan_.capped.tasks, *plan_.capped.floor)]
    needs += [space.vector(b) for gang in plan_.capped.gangs for b in gang.bundles]
    out = {}
    for g in groups.block_order:
        cap = groups.capacity[g]
        if any(bool(np.all(cap >= v)) for v in needs) and (
            budget.headroom(g) == 0 or not groups.spec[g].launchable
        ):
            out[g] = budget.limit(g)
    return out


def _report_unplaced(
    plan_: Plan,
    demand: _Demand,
    quota: tuple[list[int], list[int], list[int]],
    groups: _Groups,
    existing: ExistingNodes,
) -> None:
    """Sort what could not be placed into infeasible (never) and capped (not now)."""
    shapes = [c for g, c in groups.capacity.items() if groups.spec[g].max != 0]

    def holdable(vec: Vector) -> bool:
        return any(bool(np.all(c >= vec)) for c in shapes) or bool(
            np.any(np.all(existing.total >= vec, axis=1))
        )

    for kind, items, q in (("floor", demand.floor, quota[0]), ("tasks", demand.tasks, quota[2])):
        for src, n in zip(items.sources, items.unplaced(q), strict=True):
            if n > 0:
                vec = items.items[_first_run(items, src)].shape
                target = plan_.capped if holdable(vec) else plan_.infeasible
                bucket = target.floor if kind == "floor" else target.tasks
                bucket.append(src.model_copy(update={"count": n}))
    gangs = demand.gangs
    for gsrc, n in zip(gangs.sources, gangs.unplaced(quota[1]), strict=True):
        if n <= 0:
            continue
        gang = gangs.items[_first_run(gangs, gsrc)]
        pieces = [gang.total] if gang.strategy == "STRICT_PACK" else list(gang.bundles)
        target = plan_.capped if all(holdable(p) for p in pieces) else plan_.infeasible
        target.gangs.append(gsrc.model_copy(update={"count": n}))


def _first_run(items: _Items[ItemT, SourceT], source: SourceT) -> int:
    """The first run of the report line that ``source`` starts."""
    line = next(i for i, s in enumerate(items.sources) if s is source)
    return next(r for r, run in enumerate(items.runs) if items.line[run[0]] == line)
