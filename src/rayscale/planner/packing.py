"""First-fit-decreasing placement over a table of nodes, vectorised with numpy.

One :class:`NodeTable` holds every node in a fixed preference order: the
existing nodes, then the nodes launched for each group, in blocks at fixed
positions after them, so that placing demand while launching gives the same
result as placing it afterwards on the final node set. That makes the same
code both the planner's launcher and the sufficiency check used to trim waste.

**Counts cost nothing.** Nothing here is proportional to how many copies of
a shape wait, or to how many nodes are launched:

- Existing nodes are columns: ``free[d]`` is one contiguous array holding
  resource ``d`` of every node (a shape uses two or three resources, and
  reading a contiguous column is about ten times faster than gathering them
  out of a row-major matrix). Placing ``count`` copies of a shape is one
  vectorised step: fit counts, a running sum, one subtraction.
- Launched nodes are :class:`Segment` s: a unit of one or more nodes (columns)
  repeated ``repeat`` times. A group's fresh launches are one segment (its
  capacity, ``repeat`` = the number launched), so a billion nodes are one
  column. Placing copies into a segment fills whole units arithmetically and
  splits it at most in three (full units, one partly filled unit, untouched
  units).
- Gangs (placement groups) are placed one copy at a time, because each copy
  is placed whole or not at all, with two exact shortcuts. When a copy
  launched nothing, the next copies land on the same nodes for as long as
  those nodes hold them (every earlier node only lost capacity since), so
  they are placed in one step. And when the nodes that can still hold a
  piece of the gang (the *frontier*) repeat, the copies in between form a
  period: each period adds the same nodes in the same states, draws the same
  number of fresh nodes from the same segments or the launcher, and nothing
  else. ``n`` periods are then added at once, as a segment whose unit is one
  period's nodes, for as many periods as the copies left, the segments and
  the launcher's headroom allow (see :func:`_fast_forward`). Runs of
  identical nodes are kept as one segment (:func:`_tidy`), so that nodes a
  gang finishes alike, and fresh leftovers it keeps adding, do not hide the
  period. A gang whose copies never fall into a period is placed at most
  :data:`GANG_STEPS` steps per pass; the copies left are capped.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rayscale.planner.resources import INT64_MAX, Vector

# Bits recording what a node was used for, in NodeTable.used.
USED_FLOOR = 1
USED_GANGS = 2
USED_TASKS = 4

STRICT_SPREAD = "STRICT_SPREAD"
STRICT_PACK = "STRICT_PACK"

Columns = npt.NDArray[np.int64]  # (resources, nodes): one contiguous row per resource
Bits = npt.NDArray[np.int8]

#: The most steps (a copy placed on its own, with the copies that repeat it or
#: the periods found after it) for one gang (placement group shape) in one
#: pass. Copies not placed by then are left for a later round, reported as
#: capped: only a gang whose copies never fall into a period gets there.
GANG_STEPS = 1_000


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
    cap = min(cap, INT64_MAX)
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
    dims = np.flatnonzero(shape).tolist()
    if not dims:
        return np.ones(cols.shape[1], dtype=np.bool_)
    ok: npt.NDArray[np.bool_] = cols[dims[0]] >= shape[dims[0]]
    for d in dims[1:]:
        ok &= cols[d] >= shape[d]
    return ok


def place_copies(cols: Columns, used: Bits, shape: Vector, count: int, bit: int) -> int:
    """First-fit ``count`` copies of ``shape`` into ``cols``; return how many did not fit."""
    if count <= 0 or cols.shape[1] == 0:
        return count
    fits = fit_columns(cols, shape, count)
    room = _total(fits)
    if room == 0:
        return count
    if room <= count:
        take = fits
        placed = room
    else:
        last = _first_reaching(fits, count)
        take = fits[: last + 1]
        take[last] = count - _total(take[:last])
        placed = count
    rows = take.size
    for d in np.flatnonzero(shape):
        cols[d, :rows] -= take * shape[d]
    used[:rows][take > 0] |= bit
    return count - placed


def _total(values: Vector) -> int:
    """The exact sum of non-negative int64 values (numpy's would wrap past 2^63)."""
    if values.size == 0:
        return 0
    if int(values.max()) <= INT64_MAX // values.size:
        return int(values.sum())
    return sum(values.tolist())


_BLOCK = 1024


def _first_reaching(values: Vector, target: int) -> int:
    """The first index where the running sum of ``values`` (>= 0) reaches ``target``.

    The same answer as ``searchsorted(cumsum(values), target)``, but numpy's
    cumsum is sequential (about 20 times slower than a sum): sum blocks of
    rows, then run the cumulative sum inside the one block where it is reached.
    """
    if values.size and int(values.max()) > INT64_MAX // values.size:  # sums past 2^63
        return bisect.bisect_left(list(itertools.accumulate(values.tolist())), target)
    sums = np.cumsum(np.add.reduceat(values, np.arange(0, values.size, _BLOCK)))
    block = int(np.searchsorted(sums, target, side="left"))
    before = int(sums[block - 1]) if block else 0
    inner = np.cumsum(values[block * _BLOCK : (block + 1) * _BLOCK])
    return block * _BLOCK + int(np.searchsorted(inner, target - before, side="left"))


# ------------------------------------------------------------------ the table


@dataclass(eq=False)
class Segment:
    """Launched nodes: a unit of ``width`` nodes (columns), repeated ``repeat`` times."""

    free: Columns
    total: Columns
    used: Bits
    repeat: int
    #: the fewest units it ever had (a gang's period must not have emptied it)
    low: int = -1

    def __post_init__(self) -> None:
        if self.low < 0:
            self.low = self.repeat

    @property
    def width(self) -> int:
        return int(self.used.size)

    def copy(self, repeat: int) -> Segment:
        return Segment(self.free.copy(), self.total.copy(), self.used.copy(), repeat)

    def draw(self, units: int) -> None:
        """``units`` fewer units (split off by the caller)."""
        self.repeat -= units
        self.low = min(self.low, self.repeat)

    def cols(self, which: str) -> Columns:
        return self.free if which == "free" else self.total


def _append(seg: Segment, free: Columns, total: Columns, used: Bits) -> None:
    """Add nodes at the end of a segment of single nodes."""
    seg.free = np.concatenate([seg.free, free], axis=1)
    seg.total = np.concatenate([seg.total, total], axis=1)
    seg.used = np.concatenate([seg.used, used])


def _truncate(seg: Segment, width: int) -> None:
    """Undo :func:`_append` of ``width`` nodes."""
    keep = seg.width - width
    seg.free, seg.total, seg.used = seg.free[:, :keep], seg.total[:, :keep], seg.used[:keep]


def _fresh(capacity: Vector, count: int) -> Segment:
    unit = np.ascontiguousarray(capacity[:, None])
    return Segment(unit.copy(), unit.copy(), np.zeros(1, dtype=np.int8), count)


#: A node of the table: (None, column) for an existing node, else (segment, column).
Row = tuple[Segment | None, int]


class Launcher(Protocol):
    """Asked for nodes when a shape does not fit (see core._Launcher)."""

    def __call__(self, shape: Vector, remaining: int) -> tuple[str, int] | None:
        """(shape, copies still to place) -> (group, nodes to add), None when none may."""

    def open_groups(self) -> frozenset[str]:
        """The groups that may launch at least one more node now."""

    def repeats(self, per_period: Mapping[str, int]) -> int:
        """How many more times ``per_period`` launches can be added with the same open groups."""

    def add(self, launches: Mapping[str, int]) -> None:
        """Count these launches as made (a gang's periods, added at once)."""


@dataclass
class NodeTable:
    """Nodes in placement order: existing nodes (columns), then launched blocks per group."""

    free: Columns  # existing nodes
    total: Columns
    used: Bits
    existing: int
    block_order: Sequence[str]
    blocks: dict[str, list[Segment]]
    launched: dict[str, int] = field(default_factory=dict)
    #: how many times a gang copy changed an existing node (periods never do)
    touched: int = 0

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
        return cls(
            free=free.copy(),
            total=total.copy(),
            used=np.zeros(free.shape[1], dtype=np.int8),
            existing=len(nodes),
            block_order=block_order,
            blocks={
                g: [_fresh(capacity[g], launched[g])] if launched.get(g, 0) > 0 else []
                for g in block_order
            },
            launched={g: launched[g] for g in block_order if launched.get(g, 0) > 0},
        )

    def used_span(self, group: str) -> int:
        """How many of ``group``'s launched nodes come up to its last used one."""
        span = at = 0
        for seg in self.blocks[group]:
            used = np.flatnonzero(seg.used)
            if used.size:
                span = at + (seg.repeat - 1) * seg.width + int(used[-1]) + 1
            at += seg.repeat * seg.width
        return span

    def block_used(self, group: str) -> int:
        """The bits of every node launched for ``group``, or-ed together."""
        bits = 0
        for seg in self.blocks[group]:
            bits |= int(np.bitwise_or.reduce(seg.used))
        return bits

    def launch(self, group: str, count: int, capacity: Vector) -> tuple[Any, ...]:
        """Add ``count`` empty nodes of ``group`` at the end of its block; return the undo.

        A single node joins a block that ends in single nodes (one segment
        for all of them); more nodes are a segment of their own.
        """
        segs = self.blocks[group]
        self.launched[group] = self.launched.get(group, 0) + count
        if count == 1 and segs and segs[-1].repeat == 1:
            _append(segs[-1], capacity[:, None], capacity[:, None], np.zeros(1, np.int8))
            return ("launch", group, segs[-1], None)
        seg = _fresh(capacity, count)
        segs.append(seg)
        return ("launch", group, None, seg)

    def _unlaunch(self, group: str, grown: Segment | None, seg: Segment | None) -> None:
        if grown is not None:
            _truncate(grown, 1)
            self.launched[group] -= 1
        else:
            assert seg is not None
            self.blocks[group].remove(seg)
            self.launched[group] -= seg.repeat
        if not self.launched[group]:
            del self.launched[group]

    # ------------------------------------------------------------- copies

    def place_copies(self, which: str, shape: Vector, count: int, bit: int) -> int:
        """First-fit ``count`` copies of ``shape`` on ``which`` ("free" or "total"); return
        how many did not fit."""
        remaining = place_copies(getattr(self, which), self.used, shape, count, bit)
        need = [(d, int(shape[d])) for d in np.flatnonzero(shape).tolist()]
        for g in self.block_order:
            segs = self.blocks[g]
            i = 0
            while remaining > 0 and i < len(segs):
                remaining, i = _place_in_segment(segs, i, which, shape, need, remaining, bit)
            if remaining <= 0:
                break
        return remaining

    # ------------------------------------------------------------- one copy

    def place_one(
        self, shape: Vector, exclude: Sequence[Row], log: list[tuple[Any, ...]]
    ) -> Row | None:
        """First-fit one ``shape`` on free capacity, skipping ``exclude``; log the change."""
        if self.existing:
            ok = holds(self.free, shape)
            for seg, col in exclude:
                if seg is None:
                    ok[col] = False
            if ok.any():
                col = int(ok.argmax())
                self.touched += 1
                return self._take((None, col), shape, log)
        for g in self.block_order:
            segs = self.blocks[g]
            if not segs:
                continue
            # one vectorised look at the whole block (a unit stands for its repeats)
            starts = list(itertools.accumulate((seg.width for seg in segs), initial=0))
            cols = segs[0].free if len(segs) == 1 else np.concatenate(
                [seg.free for seg in segs], axis=1
            )
            ok = holds(cols, shape)
            if exclude:
                where = {id(seg): at for seg, at in zip(segs, starts, strict=False)}
                for other, col in exclude:
                    if other is not None and id(other) in where:
                        ok[where[id(other)] + col] = False
            if not ok.any():
                continue
            found = int(ok.argmax())
            i = bisect.bisect_right(starts, found) - 1
            seg, col = segs[i], found - starts[i]
            if seg.repeat > 1:  # its first unit joins the single nodes before it
                seg.draw(1)
                if i and segs[i - 1].repeat == 1:
                    before = segs[i - 1]
                    col += before.width
                    _append(before, seg.free, seg.total, seg.used)
                    log.append(("split", segs, before, seg, seg.width))
                    seg = before
                else:
                    first = seg.copy(1)
                    segs.insert(i, first)
                    log.append(("split", segs, first, seg, 0))
                    seg = first
            return self._take((seg, col), shape, log)
        return None

    def _take(self, row: Row, shape: Vector, log: list[tuple[Any, ...]]) -> Row:
        seg, col = row
        free, used = (self.free, self.used) if seg is None else (seg.free, seg.used)
        log.append(("place", row, int(used[col]), shape))
        free[:, col] -= shape
        used[col] |= USED_GANGS
        return row

    def undo(self, log: list[tuple[Any, ...]]) -> None:
        """Undo the changes of :meth:`place_one` and launches, newest first."""
        for entry in reversed(log):
            if entry[0] == "place":
                (seg, col), bits, shape = entry[1], entry[2], entry[3]
                free, used = (self.free, self.used) if seg is None else (seg.free, seg.used)
                free[:, col] += shape
                used[col] = bits
            elif entry[0] == "split":
                segs, first, rest, appended = entry[1], entry[2], entry[3], entry[4]
                if appended:
                    _truncate(first, appended)
                else:
                    segs.remove(first)
                rest.repeat += 1
            else:
                self._unlaunch(entry[1], entry[2], entry[3])

    def free_of(self, row: Row) -> Vector:
        seg, col = row
        column: Vector = (self.free if seg is None else seg.free)[:, col]
        return column

    def coalesce(self) -> None:
        """Merge neighbouring single units of a block into one segment (fewer segments)."""
        for g in self.block_order:
            segs = self.blocks[g]
            if sum(1 for s in segs if s.repeat == 1) < 2:
                continue
            out: list[Segment] = []
            run: list[Segment] = []
            for seg in [*segs, None]:
                if seg is not None and seg.repeat == 1:
                    run.append(seg)
                    continue
                if len(run) > 1:
                    out.append(Segment(
                        np.concatenate([s.free for s in run], axis=1),
                        np.concatenate([s.total for s in run], axis=1),
                        np.concatenate([s.used for s in run]),
                        1,
                    ))
                else:
                    out.extend(run)
                run = []
                if seg is not None:
                    out.append(seg)
            segs[:] = out


def _place_in_segment(
    segs: list[Segment],
    i: int,
    which: str,
    shape: Vector,
    need: list[tuple[int, int]],
    remaining: int,
    bit: int,
) -> tuple[int, int]:
    """Place copies into ``segs[i]``: (copies left, index of the next segment).

    ``need`` is ``shape``'s non-zero (resource, amount) pairs.
    """
    seg = segs[i]
    cols = seg.cols(which)
    if seg.width == 1:  # most segments: one node's unit (a group's fresh nodes)
        return _place_in_node(segs, i, cols, shape, need, remaining, bit)
    if seg.repeat == 1:
        return place_copies(cols, seg.used, shape, remaining, bit), i + 1
    fits = fit_columns(cols, shape, remaining)
    unit = _total(fits)
    if unit == 0:
        return remaining, i + 1
    if remaining >= unit * seg.repeat:  # every unit filled alike
        _take_fits(cols, seg.used, shape, fits, bit)
        return remaining - unit * seg.repeat, i + 1
    full, rest = divmod(remaining, unit)
    parts: list[Segment] = []
    if full:
        filled = seg.copy(full)
        _take_fits(filled.cols(which), filled.used, shape, fits, bit)
        parts.append(filled)
    if rest:
        partly = seg.copy(1)
        place_copies(partly.cols(which), partly.used, shape, rest, bit)
        parts.append(partly)
    seg.draw(full + (1 if rest else 0))
    if seg.repeat:
        parts.append(seg)
    segs[i : i + 1] = parts
    return 0, i + len(parts)


def _place_in_node(
    segs: list[Segment],
    i: int,
    cols: Columns,
    shape: Vector,
    need: list[tuple[int, int]],
    remaining: int,
    bit: int,
) -> tuple[int, int]:
    """:func:`_place_in_segment` for a unit of one node, in plain integers."""
    seg = segs[i]
    column = cols[:, 0].tolist()
    one = min(min((column[d] // amount for d, amount in need), default=remaining), INT64_MAX)
    if one <= 0:
        return remaining, i + 1
    if remaining >= one * seg.repeat:  # every unit filled alike
        cols[:, 0] -= one * shape
        seg.used[0] |= bit
        return remaining - one * seg.repeat, i + 1
    full, rest = divmod(remaining, one)
    parts: list[Segment] = []
    if full:
        filled = seg.copy(full)
        filled.cols("free" if cols is seg.free else "total")[:, 0] -= one * shape
        filled.used[0] |= bit
        parts.append(filled)
    if rest:
        partly = seg.copy(1)
        partly.cols("free" if cols is seg.free else "total")[:, 0] -= rest * shape
        partly.used[0] |= bit
        parts.append(partly)
    seg.draw(full + (1 if rest else 0))
    if seg.repeat:
        parts.append(seg)
    segs[i : i + 1] = parts
    return 0, i + len(parts)


def _take_fits(cols: Columns, used: Bits, shape: Vector, fits: Vector, bit: int) -> None:
    for d in np.flatnonzero(shape):
        cols[d] -= fits * shape[d]
    used[fits > 0] |= bit


# ------------------------------------------------------------------- demand


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
        """The sum of the bundles; past 2^63 it stays at 2^63 - 1, which no node holds."""
        total = np.zeros_like(self.bundles[0])
        for bundle in self.bundles:
            total = np.where(total > INT64_MAX - bundle, INT64_MAX, total + bundle)
        return total

    @property
    def pieces(self) -> list[Vector]:
        """What is placed on one node each: the total for STRICT_PACK, else each bundle."""
        return [self.total] if self.strategy == STRICT_PACK else list(self.bundles)


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
    remaining = table.place_copies(which, shape, count, bit)
    while remaining > 0 and launcher is not None:
        choice = launcher(shape, remaining)
        if choice is None:
            break
        group, nodes = choice
        table.launch(group, nodes, capacity[group])
        remaining = table.place_copies(which, shape, remaining, bit)
    return remaining


def _place_gang_once(
    table: NodeTable,
    gang: GangItem,
    launcher: Launcher | None,
    capacity: dict[str, Vector],
) -> tuple[list[tuple[Row, Vector]], bool] | None:
    """Place one gang whole (launching as needed) or leave the table unchanged.

    Returns where each piece went and whether nodes were launched. Changes
    are undone from a log rather than a copy of the table, so a gang costs the
    nodes it touches, not the size of the table. (Nodes the launcher added for
    a gang that then failed leave the table, but stay counted by the
    launcher: the next placement pass starts with them.)
    """
    distinct = gang.strategy == STRICT_SPREAD
    taken: list[Row] = []
    placed: list[tuple[Row, Vector]] = []
    log: list[tuple[Any, ...]] = []
    launched = False
    for piece in gang.pieces:
        exclude = taken if distinct else []
        row = table.place_one(piece, exclude, log)
        if row is None and launcher is not None:
            choice = launcher(piece, 1)
            if choice is not None:
                group, nodes = choice
                log.append(table.launch(group, nodes, capacity[group]))
                launched = True
                row = table.place_one(piece, exclude, log)
        if row is None:
            table.undo(log)
            return None
        taken.append(row)
        placed.append((row, piece))
    return placed, launched


def _repeat_copies(table: NodeTable, placed: list[tuple[Row, Vector]], most: int) -> int:
    """Place up to ``most`` more copies exactly where the last one went; return how many.

    Valid after a copy that launched nothing: every node before the one a
    piece took has only lost capacity since (it did not hold the piece then,
    or the same copy had taken it), so the next copy's pieces go to the same
    nodes as long as those still hold them: ``free >= t * (what one copy takes
    there)`` for t copies.
    """
    per_row: dict[int, tuple[Row, Vector]] = {}
    for row, piece in placed:
        key = id(row[0]) * 1_000_003 + row[1] if row[0] is not None else -1 - row[1]
        _, before = per_row.get(key, (row, np.zeros_like(piece)))
        per_row[key] = (row, before + piece)
    times = most
    for row, take in per_row.values():
        dims = np.flatnonzero(take)
        if dims.size:
            times = min(times, int((table.free_of(row)[dims] // take[dims]).min()))
    if times <= 0:
        return 0
    for row, take in per_row.values():
        table.free_of(row)[:] -= times * take
        if row[0] is None:
            table.touched += 1
    return times


# ------------------------------------------------------------ gang periods


@dataclass
class _Block:
    """A launched block at one moment, flattened: every unit's nodes as columns.

    ``kind[c]`` is 0 for a single node, else 1 + the index of the segment of
    several units (``segs``) that column ``c`` is part of; ``repeat`` and
    ``low`` are those segments' repeats and low-water marks then.
    """

    free: Columns
    total: Columns
    used: Bits
    kind: npt.NDArray[np.int64]
    segs: list[Segment]
    repeat: list[int]
    low: list[int]

    @classmethod
    def of(cls, segs: Sequence[Segment], size: int) -> _Block:
        if not segs:
            empty = np.zeros((size, 0), dtype=np.int64)
            return cls(empty, empty, np.zeros(0, np.int8), np.zeros(0, np.int64), [], [], [])
        multi = [seg for seg in segs if seg.repeat > 1]
        index = {id(seg): k + 1 for k, seg in enumerate(multi)}
        return cls(
            np.concatenate([seg.free for seg in segs], axis=1),
            np.concatenate([seg.total for seg in segs], axis=1),
            np.concatenate([seg.used for seg in segs]),
            np.repeat(
                np.array([index.get(id(seg), 0) for seg in segs], dtype=np.int64),
                [seg.width for seg in segs],
            ),
            multi,
            [seg.repeat for seg in multi],
            [seg.low for seg in multi],
        )

    @property
    def size(self) -> int:
        return int(self.used.size)

    def repeats(self) -> npt.NDArray[np.object_]:
        """Per column: 0 for a single node, else its segment's repeat (Python ints)."""
        table = np.array([0, *self.repeat], dtype=object)
        out: npt.NDArray[np.object_] = table[self.kind]
        return out

    def key(self, pieces: Sequence[Vector]) -> bytes:
        """The nodes that can hold a piece, in order (a segment's, whatever its repeat)."""
        able = _able(self.free, pieces)
        return (
            self.free[:, able].tobytes() + self.used[able].tobytes()
            + (self.kind[able] > 0).tobytes()
        )

    def segments(self, start: int, end: int, repeat: Mapping[int, int]) -> list[Segment]:
        """Segments for columns [start, end): runs of single nodes, and whole segments
        of several units (``start`` and ``end`` are at their bounds) with these repeats."""
        out: list[Segment] = []
        c = start
        while c < end:
            k = int(self.kind[c])
            stop = c + 1
            width = self.segs[k - 1].width if k else end
            while stop < end and int(self.kind[stop]) == k and stop - c < width:
                stop += 1
            unit = Segment(
                self.free[:, c:stop].copy(), self.total[:, c:stop].copy(),
                self.used[c:stop].copy(), 1 if k == 0 else repeat[k],
            )
            out.append(unit)
            c = stop
        return out


def _able(cols: Columns, pieces: Sequence[Vector]) -> npt.NDArray[np.bool_]:
    """Which nodes of ``cols`` hold at least one of the pieces."""
    ok = np.zeros(cols.shape[1], dtype=np.bool_)
    for piece in pieces:
        ok |= holds(cols, piece)
    return ok


@dataclass
class _Mark:
    placed: int
    blocks: dict[str, _Block]
    launched: dict[str, int]


@dataclass
class _Embedding:
    """``after`` = A + X + B' for ``before`` = A + B (see :func:`_embed`)."""

    prefix: int  # columns of A
    start: int  # where B' starts in ``after`` (X is after[prefix:start])
    change: dict[int, int]  # per segment of several units in B': repeat after - before


def _embed(before: _Block, after: _Block, pieces: Sequence[Vector]) -> _Embedding | None:
    """How ``after`` is ``before`` with nodes X inserted in one place, X holding no piece.

    ``before`` = A + B and ``after`` = A + X + B': B' has B's nodes, except
    that its segments of several units may have other repeats (while being the
    same segments); A's are unchanged. None when ``after`` is not of that form.
    """
    n = min(before.size, after.size)
    same = (
        np.all(before.free[:, :n] == after.free[:, :n], axis=0)
        & np.all(before.total[:, :n] == after.total[:, :n], axis=0)
        & (before.used[:n] == after.used[:n])
        & (before.repeats()[:n] == after.repeats()[:n])
    )
    prefix = int(np.argmin(same)) if not same.all() else n
    # A ends at a segment's bound
    while 0 < prefix < before.size and before.kind[prefix] and (
        before.kind[prefix] == before.kind[prefix - 1]
    ):
        prefix -= 1
    rest = before.size - prefix
    start = after.size - rest
    if start < prefix:
        return None
    if rest:
        b, a = slice(prefix, None), slice(start, None)
        if not (
            np.array_equal(before.free[:, b], after.free[:, a])
            and np.array_equal(before.total[:, b], after.total[:, a])
            and np.array_equal(before.used[b], after.used[a])
            and np.array_equal(before.kind[b] > 0, after.kind[a] > 0)
        ):
            return None
    change: dict[int, int] = {}
    for c in range(rest):  # the segments of several units in B: the same ones
        kb, ka = int(before.kind[prefix + c]), int(after.kind[start + c])
        if kb == 0:
            continue
        if before.segs[kb - 1] is not after.segs[ka - 1]:
            return None
        change[ka] = after.repeat[ka - 1] - before.repeat[kb - 1]
    if (start < after.size and after.kind[start] and start
            and after.kind[start - 1] == after.kind[start]):
        return None  # B' starts inside a segment
    inserted = slice(prefix, start)
    if after.kind[inserted].any() or _able(after.free[:, inserted], pieces).any():
        return None
    return _Embedding(prefix, start, change)


def _fast_forward(
    table: NodeTable,
    mark: _Mark,
    now: _Mark,
    pieces: Sequence[Vector],
    left: int,
    launcher: Launcher | None,
) -> int:
    """Add whole periods (``mark`` to ``now``) at once; return the copies they place.

    Between ``mark`` and ``now`` the frontier came back to the same nodes in
    the same states, the same groups could launch, and no existing node was
    touched. If moreover each launched block went from A + B to A + X + B'
    (:func:`_embed`), the copies after ``now`` see what the copies after
    ``mark`` saw: X holds nothing they could use, and a segment of identical
    units that never ran out looks the same whatever its repeat. So each
    further period inserts X again, changes the same segments' repeats by the
    same amounts and launches as many nodes in the same groups, for as long
    as no segment runs out (the dip a period needs, from the low-water mark)
    and the launcher's open groups stay open.
    """
    per = now.placed - mark.placed
    periods = left // per
    found: dict[str, _Embedding] = {}
    for g in table.block_order:
        embedding = _embed(mark.blocks[g], now.blocks[g], pieces)
        if embedding is None:
            return 0
        found[g] = embedding
        block = now.blocks[g]
        for k, change in embedding.change.items():
            if change < 0:  # each period must start with more units than its deepest dip
                dip = block.repeat[k - 1] - change - block.low[k - 1]
                spare = block.repeat[k - 1] - dip - 1
                if spare < 0:
                    return 0
                periods = min(periods, spare // -change + 1)
    launches = {
        g: now.launched.get(g, 0) - mark.launched.get(g, 0) for g in table.block_order
    }
    launches = {g: n for g, n in launches.items() if n}
    if launches:
        if launcher is None:
            return 0
        periods = min(periods, launcher.repeats(launches))
    if periods <= 0:
        return 0
    for g, embedding in found.items():
        block = now.blocks[g]
        repeat = {k + 1: r for k, r in enumerate(block.repeat)}
        segs = block.segments(0, embedding.start, repeat)
        if embedding.start > embedding.prefix:
            pattern = block.segments(embedding.prefix, embedding.start, repeat)
            segs.append(Segment(
                np.concatenate([u.free for u in pattern], axis=1),
                np.concatenate([u.total for u in pattern], axis=1),
                np.concatenate([u.used for u in pattern]),
                periods,
            ))
        for k, change in embedding.change.items():
            repeat[k] += periods * change
        segs += block.segments(embedding.start, block.size, repeat)
        table.blocks[g] = _merged(segs)
    for g, n in launches.items():
        table.launched[g] = table.launched.get(g, 0) + periods * n
    if launches and launcher is not None:
        launcher.add({g: periods * n for g, n in launches.items()})
    return periods * per


_RUN = 4


def _tidy(segs: list[Segment]) -> None:
    """Runs of identical single nodes become one segment each; the rest stays single.

    Called on a block after each copy of a gang placed on its own: the nodes
    a gang finishes alike, and the fresh leftovers it adds behind the one it
    is filling, then stay one segment each however many there are, so the
    table stays small and a period shows as the same frontier with other
    repeats. A run that contains a segment of several units keeps that
    segment (its identity and low-water mark matter to :func:`_fast_forward`).
    Patterns (units of several nodes) are left as they are.
    """
    if len(segs) < 2 and not (segs and segs[0].repeat == 1 and segs[0].width > 1):
        return
    block = _Block.of(segs, segs[0].free.shape[0])
    kind = block.kind
    opaque = np.zeros(block.size, dtype=np.bool_)
    for k, seg in enumerate(block.segs):
        if seg.width > 1:
            opaque[kind == k + 1] = True
    same = (
        ~opaque[:-1] & ~opaque[1:]
        & np.all(block.free[:, :-1] == block.free[:, 1:], axis=0)
        & np.all(block.total[:, :-1] == block.total[:, 1:], axis=0)
        & (block.used[:-1] == block.used[1:])
    )
    starts = np.concatenate([[0], np.flatnonzero(~same) + 1])
    ends = np.concatenate([starts[1:], [block.size]])
    # (short runs of alike nodes stay single: merging them would only cut the
    # block into many small segments)
    special = ((ends - starts) >= _RUN) | (np.add.reduceat(kind != 0, starts) > 0)
    if not special.any():
        segs[:] = _merged(segs)
        return
    out: list[Segment] = []
    at = 0  # columns before ``at`` are out
    for start, end in zip(starts[special].tolist(), ends[special].tolist(), strict=True):
        if start < at:
            continue  # the rest of a pattern
        if start > at:  # single nodes in between
            out.append(Segment(block.free[:, at:start], block.total[:, at:start],
                               block.used[at:start], 1))
        members = [int(k) for k in np.unique(kind[start:end]) if k]
        if members and block.segs[members[0] - 1].width > 1:  # a pattern, as it is
            seg = block.segs[members[0] - 1]
            out.append(seg)
            at = start + seg.width
            continue
        repeat = int(np.count_nonzero(kind[start:end] == 0)) + sum(
            block.repeat[k - 1] for k in members
        )
        if members:
            keep = block.segs[members[0] - 1]
            keep.low = min(block.low[k - 1] for k in members)
        else:
            keep = Segment(block.free[:, start : start + 1].copy(),
                           block.total[:, start : start + 1].copy(),
                           block.used[start : start + 1].copy(), 1)
        keep.repeat = repeat
        out.append(keep)
        at = end
    if at < block.size:
        out.append(Segment(block.free[:, at:], block.total[:, at:], block.used[at:], 1))
    segs[:] = _merged(out)


def _merged(segs: list[Segment]) -> list[Segment]:
    """Neighbouring single-unit segments as one (a pattern keeps its own)."""
    out: list[Segment] = []
    for seg in segs:
        if out and seg.repeat == 1 and out[-1].repeat == 1:
            _append(out[-1], seg.free, seg.total, seg.used)
        else:
            out.append(seg)
    return out


def _place_gang_copies(
    table: NodeTable,
    gang: GangItem,
    quota: int,
    launcher: Launcher | None,
    capacity: dict[str, Vector],
) -> int:
    """Place up to ``quota`` copies of a gang, each whole; return how many were placed."""
    placed = 0
    pieces = gang.pieces
    size = table.free.shape[0]
    history: dict[tuple[Any, ...], _Mark] = {}
    for step in range(GANG_STEPS):
        if placed >= quota:
            break
        once = _place_gang_once(table, gang, launcher, capacity)
        if once is None:
            break
        placed += 1
        where, launched = once
        if placed < quota and not launched:
            placed += _repeat_copies(table, where, quota - placed)
        if placed >= quota:
            break
        if step >= 128 and step % 16:  # (after 128 steps, look every 16th step)
            if step % 64 == 0:
                table.coalesce()
            continue
        for g in table.block_order:
            _tidy(table.blocks[g])
        blocks = {g: _Block.of(table.blocks[g], size) for g in table.block_order}
        key = (
            table.touched,
            tuple(blocks[g].key(pieces) for g in table.block_order),
            launcher.open_groups() if launcher is not None else None,
        )
        now = _Mark(placed, blocks, dict(table.launched))
        mark = history.get(key)
        if mark is not None:
            more = _fast_forward(table, mark, now, pieces, quota - placed, launcher)
            if more:
                placed += more
                history.clear()
                continue
        history[key] = now
    table.coalesce()
    return placed


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
        gang_left.append(q - _place_gang_copies(table, gang, q, launcher, capacity))
        if give_up and gang_left[-1]:
            return stopped()
    for item, q in zip(tasks, task_quota, strict=True):
        task_left.append(
            _place_shape(table, "free", item.shape, q, USED_TASKS, launcher, capacity)
        )
        if give_up and task_left[-1]:
            return stopped()
    return PassResult(floor_left, gang_left, task_left, table)
