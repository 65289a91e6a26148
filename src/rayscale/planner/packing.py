"""First-fit-decreasing placement over a table of nodes, vectorised with numpy.

One :class:`NodeTable` holds a row per node: its free capacity (what tasks and
gangs use) and its remaining total capacity (what ``request_resources`` floors
use). Rows are in a fixed preference order, and launched nodes are inserted in
blocks per group at fixed positions after the existing nodes, so that placing
demand while launching gives the same result as placing it afterwards on the
final node set. That makes the same code both the planner's launcher and the
sufficiency check used to trim waste.

Demand shapes come with counts; placing ``count`` copies of a shape is one
vectorised step (fit counts, a cumulative sum, one subtraction), so a pass
costs O(shapes x nodes) numpy work rather than O(requests x nodes) Python work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rayscale.planner.resources import Vector, fit_counts

# Bits recording what a node was used for, in NodeTable.used.
USED_FLOOR = 1
USED_GANGS = 2
USED_TASKS = 4

STRICT_SPREAD = "STRICT_SPREAD"
STRICT_PACK = "STRICT_PACK"


@dataclass(frozen=True)
class ExistingNode:
    """A node present before the plan: fixed (head), running or pending."""

    id: str
    group: str
    free: Vector
    total: Vector


@dataclass(frozen=True)
class ExistingNodes:
    """Existing nodes in placement order, with their matrices built once per plan."""

    nodes: Sequence[ExistingNode]
    free: npt.NDArray[np.int64]
    total: npt.NDArray[np.int64]

    @classmethod
    def of(cls, nodes: Sequence[ExistingNode], width: int) -> ExistingNodes:
        free = np.array([n.free for n in nodes], dtype=np.int64).reshape(len(nodes), width)
        total = np.array([n.total for n in nodes], dtype=np.int64).reshape(len(nodes), width)
        return cls(nodes, free, total)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i: int) -> ExistingNode:
        return self.nodes[i]


@dataclass
class NodeTable:
    """Rows of nodes in placement order: existing nodes, then launched blocks."""

    free: npt.NDArray[np.int64]
    total: npt.NDArray[np.int64]
    used: npt.NDArray[np.int8]
    groups: list[str]
    existing: int
    block_order: Sequence[str]
    launched: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        nodes: ExistingNodes,
        block_order: Sequence[str],
        capacity: dict[str, Vector],
        launched: dict[str, int],
    ) -> NodeTable:
        table = cls(
            free=nodes.free.copy(),
            total=nodes.total.copy(),
            used=np.zeros(len(nodes), dtype=np.int8),
            groups=[n.group for n in nodes.nodes],
            existing=len(nodes),
            block_order=block_order,
        )
        for group in block_order:
            if launched.get(group, 0) > 0:
                table.launch(group, launched[group], capacity[group])
        return table

    def launch(self, group: str, count: int, capacity: Vector) -> int:
        """Insert ``count`` empty nodes of ``group`` at the end of its block; return the row."""
        at = self.existing
        for g in self.block_order:
            at += self.launched.get(g, 0)
            if g == group:
                break
        rows = np.tile(capacity, (count, 1))
        self.free = np.insert(self.free, at, rows, axis=0)
        self.total = np.insert(self.total, at, rows, axis=0)
        self.used = np.insert(self.used, at, np.zeros(count, dtype=np.int8))
        self.groups[at:at] = [group] * count
        self.launched[group] = self.launched.get(group, 0) + count
        return at

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.free.copy(),
            self.total.copy(),
            self.used.copy(),
            list(self.groups),
            dict(self.launched),
        )

    def restore(self, snap: tuple[object, ...]) -> None:
        free, total, used, groups, launched = snap
        self.free = free  # type: ignore[assignment]
        self.total = total  # type: ignore[assignment]
        self.used = used  # type: ignore[assignment]
        self.groups = groups  # type: ignore[assignment]
        self.launched = launched  # type: ignore[assignment]


def place_copies(
    matrix: npt.NDArray[np.int64],
    used: npt.NDArray[np.int8],
    shape: Vector,
    count: int,
    bit: int,
) -> int:
    """First-fit ``count`` copies of ``shape`` into ``matrix``; return how many did not fit."""
    if count <= 0 or matrix.shape[0] == 0:
        return count
    fits = fit_counts(matrix, shape, count)
    cumulative = np.cumsum(fits)
    if cumulative[-1] == 0:
        return count
    last = int(np.searchsorted(cumulative, count, side="left"))
    if last >= fits.size:
        take = fits
        placed = int(cumulative[-1])
    else:
        take = fits[: last + 1].copy()
        before = int(cumulative[last - 1]) if last > 0 else 0
        take[last] = count - before
        placed = count
    rows = take.size
    matrix[:rows] -= take[:, None] * shape
    used[:rows][take > 0] |= bit
    return count - placed


def place_one(
    matrix: npt.NDArray[np.int64],
    used: npt.NDArray[np.int8],
    shape: Vector,
    bit: int,
    exclude: set[int] | None = None,
) -> int | None:
    """First-fit one ``shape``, skipping rows in ``exclude``; return the row or None."""
    if matrix.shape[0] == 0:
        return None
    ok = np.all(matrix >= shape, axis=1)
    if exclude:
        ok[list(exclude)] = False
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return None
    row = int(rows[0])
    matrix[row] -= shape
    used[row] |= bit
    return row


# A launcher is asked for nodes when a shape does not fit: (shape, copies still
# to place) -> (group, number of nodes to add) or None when no group may launch.
Launcher = Callable[[Vector, int], tuple[str, int] | None]


@dataclass(frozen=True)
class TaskItem:
    shape: Vector
    count: int


@dataclass(frozen=True)
class GangItem:
    strategy: str
    bundles: tuple[Vector, ...]
    count: int

    @property
    def total(self) -> Vector:
        total: Vector = np.sum(np.stack(self.bundles), axis=0).astype(np.int64)
        return total


@dataclass
class PassResult:
    """What a placement pass left unplaced, per item index, and the final table."""

    floor_left: list[int]
    gang_left: list[int]
    task_left: list[int]
    table: NodeTable

    @property
    def complete(self) -> bool:
        return not any(self.floor_left) and not any(self.gang_left) and not any(self.task_left)


def _place_shape(
    table: NodeTable,
    which: str,
    shape: Vector,
    count: int,
    bit: int,
    launcher: Launcher | None,
    capacity: dict[str, Vector],
) -> int:
    remaining = place_copies(getattr(table, which), table.used, shape, count, bit)
    while remaining > 0 and launcher is not None:
        choice = launcher(shape, remaining)
        if choice is None:
            break
        group, nodes = choice
        table.launch(group, nodes, capacity[group])
        remaining = place_copies(getattr(table, which), table.used, shape, remaining, bit)
    return remaining


def _place_gang_once(
    table: NodeTable,
    gang: GangItem,
    launcher: Launcher | None,
    capacity: dict[str, Vector],
) -> bool:
    """Place one gang whole (launching as needed) or leave the table unchanged."""
    snap = table.snapshot()
    pieces = [gang.total] if gang.strategy == STRICT_PACK else list(gang.bundles)
    taken: set[int] = set()
    distinct = gang.strategy == STRICT_SPREAD

    def place(piece: Vector) -> int | None:
        return place_one(table.free, table.used, piece, USED_GANGS, taken if distinct else None)

    for piece in pieces:
        row = place(piece)
        if row is None and launcher is not None:
            choice = launcher(piece, 1)
            if choice is not None:
                group, nodes = choice
                at = table.launch(group, nodes, capacity[group])
                # rows at or after the insertion point moved down
                taken = {r + nodes if r >= at else r for r in taken}
                row = place(piece)
        if row is None:
            table.restore(snap)
            return False
        taken.add(row)
    return True



def run_pass(
    table: NodeTable,
    floor: Sequence[TaskItem],
    gangs: Sequence[GangItem],
    tasks: Sequence[TaskItem],
    quota: tuple[Sequence[int], Sequence[int], Sequence[int]] | None,
    launcher: Launcher | None,
    capacity: dict[str, Vector],
) -> PassResult:
    """Place floor bundles (on totals), then gangs, then tasks (on free capacity).

    Items must already be sorted decreasing. ``quota`` limits how many copies
    of each item to place (the rest is known to be capped or infeasible).
    """
    floor_quota, gang_quota, task_quota = quota or (
        [i.count for i in floor],
        [g.count for g in gangs],
        [t.count for t in tasks],
    )
    floor_left = [
        _place_shape(table, "total", item.shape, q, USED_FLOOR, launcher, capacity)
        for item, q in zip(floor, floor_quota, strict=True)
    ]
    gang_left: list[int] = []
    for gang, q in zip(gangs, gang_quota, strict=True):
        placed = 0
        while placed < q and _place_gang_once(table, gang, launcher, capacity):
            placed += 1
        gang_left.append(q - placed)
    task_left = [
        _place_shape(table, "free", item.shape, q, USED_TASKS, launcher, capacity)
        for item, q in zip(tasks, task_quota, strict=True)
    ]
    return PassResult(floor_left, gang_left, task_left, table)
