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

The table is stored by column: ``free[d]`` is one contiguous array holding
resource ``d`` of every node. A shape uses two or three of the resources, and
reading a contiguous column is about ten times faster than gathering the same
values out of a row-major (nodes x resources) matrix: that layout is what
keeps a pass over 25,000 nodes at a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rayscale.planner.resources import Vector

# Bits recording what a node was used for, in NodeTable.used.
USED_FLOOR = 1
USED_GANGS = 2
USED_TASKS = 4

STRICT_SPREAD = "STRICT_SPREAD"
STRICT_PACK = "STRICT_PACK"

Columns = npt.NDArray[np.int64]  # (resources, nodes): one contiguous row per resource


@dataclass(frozen=True)
class ExistingNodes:
    """Existing nodes (fixed, running, pending) in placement order.

    ``free`` and ``total`` are (nodes x resources) matrices, built once per
    plan; ``source`` is each node's index in the caller's own node list.
    """

    ids: Sequence[str]
    groups: Sequence[str]
    free: npt.NDArray[np.int64]
    total: npt.NDArray[np.int64]
    source: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ids)

    def columns(self) -> tuple[Columns, Columns]:
        """The free and total matrices in the table's column layout."""
        return np.ascontiguousarray(self.free.T), np.ascontiguousarray(self.total.T)


def fit_columns(cols: Columns, shape: Vector, cap: int, rows: int | None = None) -> Vector:
    """How many copies of ``shape`` fit in each node of ``cols`` (at most ``cap``).

    Only the first ``rows`` nodes when given. A shape of all zeros fits ``cap``
    times anywhere. Free amounts are never negative, so a floor division per
    used resource and their minimum is the exact count.
    """
    n = cols.shape[1] if rows is None else rows
    dims = np.flatnonzero(shape)
    if dims.size == 0:
        return np.full(n, cap, dtype=np.int64)
    counts: Vector = cols[dims[0], :n] // shape[dims[0]]
    for d in dims[1:]:
        np.minimum(counts, cols[d, :n] // shape[d], out=counts)
    np.minimum(counts, cap, out=counts)
    np.maximum(counts, 0, out=counts)  # (np.clip costs more than the two)
    return counts


def holds(cols: Columns, shape: Vector) -> npt.NDArray[np.bool_]:
    """Which nodes of ``cols`` hold one ``shape``."""
    dims = np.flatnonzero(shape)
    ok = np.ones(cols.shape[1], dtype=np.bool_)
    for d in dims:
        ok &= cols[d] >= shape[d]
    return ok


@dataclass
class NodeTable:
    """Nodes in placement order: existing nodes, then launched blocks per group."""

    free: Columns
    total: Columns
    used: npt.NDArray[np.int8]
    existing: int
    block_order: Sequence[str]
    launched: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        nodes: ExistingNodes,
        columns: tuple[Columns, Columns],
        block_order: Sequence[str],
        capacity: dict[str, Vector],
        launched: dict[str, int],
    ) -> NodeTable:
        """Existing nodes (``columns``: their free and total columns) plus launched blocks."""
        free, total = columns
        blocks = [
            np.repeat(capacity[g][:, None], launched[g], axis=1)
            for g in block_order
            if launched.get(g, 0) > 0
        ]
        return cls(
            free=np.concatenate([free, *blocks], axis=1) if blocks else free.copy(),
            total=np.concatenate([total, *blocks], axis=1) if blocks else total.copy(),
            used=np.zeros(free.shape[1] + sum(b.shape[1] for b in blocks), dtype=np.int8),
            existing=len(nodes),
            block_order=block_order,
            launched={g: launched[g] for g in block_order if launched.get(g, 0) > 0},
        )

    @property
    def rows(self) -> int:
        return int(self.used.size)

    def block(self, group: str) -> tuple[int, int]:
        """Rows [start, end) of the nodes launched for ``group``."""
        start = self.existing
        for g in self.block_order:
            end = start + self.launched.get(g, 0)
            if g == group:
                return start, end
            start = end
        raise KeyError(group)

    def launch(self, group: str, count: int, capacity: Vector) -> int:
        """Insert ``count`` empty nodes of ``group`` at the end of its block; return the row."""
        at = self.block(group)[1]
        block = np.repeat(capacity[:, None], count, axis=1)
        self.free = np.insert(self.free, [at], block, axis=1)
        self.total = np.insert(self.total, [at], block, axis=1)
        self.used = np.insert(self.used, at, np.zeros(count, dtype=np.int8))
        self.launched[group] = self.launched.get(group, 0) + count
        return at

    def unlaunch(self, group: str, at: int, count: int) -> None:
        """Undo :meth:`launch` (the rows must be untouched since)."""
        rows = slice(at, at + count)
        self.free = np.delete(self.free, rows, axis=1)
        self.total = np.delete(self.total, rows, axis=1)
        self.used = np.delete(self.used, rows)
        self.launched[group] -= count
        if not self.launched[group]:
            del self.launched[group]


def place_copies(
    cols: Columns, used: npt.NDArray[np.int8], shape: Vector, count: int, bit: int
) -> int:
    """First-fit ``count`` copies of ``shape`` into ``cols``; return how many did not fit."""
    if count <= 0 or cols.shape[1] == 0:
        return count
    fits = fit_columns(cols, shape, count)
    room = int(fits.sum())
    if room == 0:
        return count
    if room <= count:
        take = fits
        placed = room
    else:
        last = _first_reaching(fits, count)
        take = fits[: last + 1]
        take[last] -= int(take.sum()) - count
        placed = count
    rows = take.size
    for d in np.flatnonzero(shape):
        cols[d, :rows] -= take * shape[d]
    used[:rows][take > 0] |= bit
    return count - placed


_BLOCK = 1024


def _first_reaching(values: Vector, target: int) -> int:
    """The first index where the running sum of ``values`` (>= 0) reaches ``target``.

    The same answer as ``searchsorted(cumsum(values), target)``, but numpy's
    cumsum is sequential (about 20 times slower than a sum): sum blocks of
    rows, then run the cumulative sum inside the one block where it is reached.
    """
    sums = np.cumsum(np.add.reduceat(values, np.arange(0, values.size, _BLOCK)))
    block = int(np.searchsorted(sums, target, side="left"))
    before = int(sums[block - 1]) if block else 0
    inner = np.cumsum(values[block * _BLOCK : (block + 1) * _BLOCK])
    return block * _BLOCK + int(np.searchsorted(inner, target - before, side="left"))


def place_one(
    cols: Columns,
    used: npt.NDArray[np.int8],
    shape: Vector,
    bit: int,
    exclude: set[int] | None = None,
) -> int | None:
    """First-fit one ``shape``, skipping rows in ``exclude``; return the row or None."""
    if cols.shape[1] == 0:
        return None
    ok = holds(cols, shape)
    if exclude:
        ok[list(exclude)] = False
    row = int(ok.argmax())
    if not ok[row]:
        return None
    cols[:, row] -= shape
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
    """Place one gang whole (launching as needed) or leave the table unchanged.

    Changes are undone from a log rather than a copy of the table, so a gang
    costs the rows it touches, not the size of the table. (Nodes the launcher
    added for a gang that then failed leave the table, but stay counted by the
    launcher: the next placement pass starts with them.)
    """
    pieces = [gang.total] if gang.strategy == STRICT_PACK else list(gang.bundles)
    taken: set[int] = set()
    distinct = gang.strategy == STRICT_SPREAD
    undo: list[tuple[str, int, int, Vector | str]] = []

    def place(piece: Vector) -> int | None:
        # bit 0: the row's previous bits go to the undo log before USED_GANGS is set
        return place_one(table.free, table.used, piece, 0, taken if distinct else None)

    for piece in pieces:
        row = place(piece)
        if row is None and launcher is not None:
            choice = launcher(piece, 1)
            if choice is not None:
                group, nodes = choice
                at = table.launch(group, nodes, capacity[group])
                undo.append(("launch", at, nodes, group))
                # rows at or after the insertion point moved down
                taken = {r + nodes if r >= at else r for r in taken}
                row = place(piece)
        if row is None:
            for kind, at, n, what in reversed(undo):
                if kind == "launch":
                    assert isinstance(what, str)
                    table.unlaunch(what, at, n)
                else:
                    assert not isinstance(what, str)
                    table.free[:, at] += what
                    table.used[at] = n
            return False
        undo.append(("place", row, int(table.used[row]), piece))
        table.used[row] |= USED_GANGS
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
    give_up: bool = False,
) -> PassResult:
    """Place floor bundles (on totals), then gangs, then tasks (on free capacity).

    Items must already be sorted decreasing. ``quota`` limits how many copies
    of each item to place (the rest is known to be capped or infeasible).
    With ``give_up``, the pass stops at the first item it cannot place whole
    (the items after it count as not placed at all): enough to answer "does
    it all fit?", and a failing check often fails on the first, largest items.
    """
    floor_quota, gang_quota, task_quota = quota or (
        [i.count for i in floor],
        [g.count for g in gangs],
        [t.count for t in tasks],
    )
    floor_left: list[int] = []
    gang_left: list[int] = []
    task_left: list[int] = []

    def stopped() -> PassResult:
        return PassResult(
            floor_left + list(floor_quota[len(floor_left):]),
            gang_left + list(gang_quota[len(gang_left):]),
            task_left + list(task_quota[len(task_left):]),
            table,
        )

    for item, q in zip(floor, floor_quota, strict=True):
        floor_left.append(
            _place_shape(table, "total", item.shape, q, USED_FLOOR, launcher, capacity)
        )
        if give_up and floor_left[-1]:
            return stopped()
    for gang, q in zip(gangs, gang_quota, strict=True):
        placed = 0
        while placed < q and _place_gang_once(table, gang, launcher, capacity):
            placed += 1
        gang_left.append(q - placed)
        if give_up and gang_left[-1]:
            return stopped()
    for item, q in zip(tasks, task_quota, strict=True):
        task_left.append(
            _place_shape(table, "free", item.shape, q, USED_TASKS, launcher, capacity)
        )
        if give_up and task_left[-1]:
            return stopped()
    return PassResult(floor_left, gang_left, task_left, table)
