"""Label selectors as resource dimensions, so that packing needs no new rule.

A request with a label selector may only use a node whose labels match it.
That is exactly a resource the request needs and only matching nodes hold:
each distinct set of alternatives (a request's ``label_selector`` and its
``fallback_strategy``, or a bundle's selector) becomes one extra dimension
of the planner's vectors. A node (existing, pending or launched) whose
labels match any of the alternatives holds :data:`NODE_AMOUNT` of it, every
other node none, and each copy of the request takes :data:`REQUEST_AMOUNT`.
First-fit, gangs (STRICT_PACK sums its bundles' dimensions: one node must
match every bundle), launching, the trim and the infeasible report all
follow without a line of their own, and their proofs hold unchanged.

The dimensions are not capacity: they weigh nothing in sizes, in the
launcher's waste and in the trim's order (their normaliser is infinite), and
the preference between alternatives is the launcher's (:meth:`LabelDims.rank`).

A node holds at most ``NODE_AMOUNT`` (2^40, about 10^12) copies of a request
that asks for a selector and no resource at all; no real demand comes close.
The sums of a dimension over a million nodes stay below 2^63.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rayscale.planner.resources import ResourceSpace, Vector
from rayscale.planner.selectors import Selector, first_match
from rayscale.planner.state import ClusterState

NODE_AMOUNT = 2**40
REQUEST_AMOUNT = 1
#: Resource names of the dimensions; no Ray resource name holds a NUL.
_PREFIX = "\x00labels:"

Alternatives = tuple[Selector, ...]


@dataclass
class LabelDims:
    """The label dimensions of one state: one per distinct set of alternatives."""

    alternatives: list[Alternatives] = field(default_factory=list)
    index: dict[int, int] = field(default_factory=dict)  # alternatives -> space dimension
    #: The label keys any selector reads: only their values decide what a node holds.
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.keys = tuple(sorted({c.key for alts in self.alternatives for selector in alts
                                  for c in selector}))

    @classmethod
    def of(cls, state: ClusterState) -> LabelDims:
        seen: dict[Alternatives, None] = {}
        demand = state.demand
        for shape in (*demand.floor, *demand.tasks):
            if shape.label_selector:
                seen.setdefault(shape.alternatives())
        for gang in demand.gangs:
            for i in range(len(gang.bundle_label_selector)):
                seen.setdefault(gang.bundle_alternatives(i))
        seen.pop((), None)
        return cls(list(seen))

    def names(self) -> list[str]:
        return [f"{_PREFIX}{k}" for k in range(len(self.alternatives))]

    def bind(self, space: ResourceSpace) -> None:
        """Learn where the space put each dimension."""
        self.index = {k: space.index[name] for k, name in enumerate(self.names())}

    @property
    def dims(self) -> list[int]:
        return list(self.index.values())

    def demand(self, vector: Vector, alternatives: Alternatives) -> Vector:
        """A request's vector with its dimension (none when it may use any node)."""
        if not alternatives:
            return vector
        out = vector.copy()
        out[self.index[self.alternatives.index(alternatives)]] = REQUEST_AMOUNT
        out.flags.writeable = False
        return out

    def node(self, vector: Vector, labels: Mapping[str, str]) -> Vector:
        """A node's (or a group's) capacity with the dimensions its labels hold."""
        held = self.held(labels)
        if not held:
            return vector
        out = vector.copy()
        out[held] = NODE_AMOUNT
        return out

    def held(self, labels: Mapping[str, str]) -> list[int]:
        """The dimensions a node with ``labels`` holds."""
        return [
            self.index[k] for k, alts in enumerate(self.alternatives)
            if first_match(alts, labels) is not None
        ]

    def add_to_rows(
        self, matrices: Sequence[npt.NDArray[np.int64]], rows: Sequence[int],
        labels: Sequence[Mapping[str, str]],
    ) -> None:
        """Set the held dimensions of ``matrices[:, rows]`` (one labels map per row)."""
        if not self.alternatives:
            return
        # Nodes differ in labels no selector reads (Ray's node id): only the values of
        # the read keys decide, so nodes fall into a few classes, each set at once.
        columns = [[node_labels.get(k) for node_labels in labels] for k in self.keys]
        classes: dict[tuple[str | None, ...], list[int]] = {}
        for row, values in zip(rows, zip(*columns, strict=True), strict=True):
            classes.setdefault(values, []).append(row)
        for values, members in classes.items():
            held = self.held({k: v for k, v in zip(self.keys, values, strict=True)
                              if v is not None})
            if held:
                at = np.ix_(np.asarray(members, dtype=np.int64), np.asarray(held))
                for matrix in matrices:
                    matrix[at] = NODE_AMOUNT

    def rank(self, shape: Vector, labels: Mapping[str, str]) -> int:
        """How far down its alternatives a shape must go for a node with ``labels``.

        0 for a shape without label dimensions; a large number when the labels
        match none (the launcher skips such groups anyway: they cannot hold it).
        """
        worst = 0
        for k, dim in self.index.items():
            if shape[dim]:
                at = first_match(self.alternatives[k], labels)
                worst = max(worst, len(self.alternatives[k]) if at is None else at)
        return worst

    def unweighted(self, scale: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """A normaliser under which the label dimensions weigh nothing."""
        if not self.index:
            return scale
        out = scale.copy()
        out[self.dims] = np.inf
        return out
