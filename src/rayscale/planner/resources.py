"""The one resource-vector type of rayscale.

At the boundaries (JSON documents, spec files, Ray) resources are plain maps
``{name: number}`` with Ray's names. Inside the planner they become fixed-point
``int64`` vectors over a :class:`ResourceSpace`, so packing arithmetic is exact
and vectorises with numpy: fractional resources (``CPU: 0.5``) are scaled by
10,000 like Ray does; byte-valued resources (``memory``,
``object_store_memory``) are kept as whole bytes so large memories cannot
overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt

ResourceMap = Mapping[str, float]
Vector = npt.NDArray[np.int64]

FRACTION_SCALE = 10_000
#: The largest int64: counts beyond it are placed in parts of at most this many.
INT64_MAX = 2**63 - 1
BYTE_RESOURCES = frozenset({"memory", "object_store_memory"})
# Resources whose use does not make a node busy: Ray keeps object store
# bookkeeping separate from its notion of an idle node.
NON_WORK_RESOURCES = frozenset({"object_store_memory"})
# The first dimensions, in this order, whenever they appear: it keeps the
# decreasing sort of demand shapes intuitive (GPU-heavy shapes first).
_LEADING = ("GPU", "CPU", "memory")
# Integers up to 2**53 convert to float and back exactly.
_EXACT = float(2**53)


class ResourceSpace:
    """A fixed, ordered set of resource names that vectors are expressed in."""

    def __init__(self, names: Iterable[str]) -> None:
        unique = set(names)
        leading = [n for n in _LEADING if n in unique]
        rest = sorted(unique.difference(_LEADING))
        self.names: tuple[str, ...] = (*leading, *rest)
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self._scale = np.array(
            [1 if n in BYTE_RESOURCES else FRACTION_SCALE for n in self.names], dtype=np.int64
        )
        # Clusters repeat a handful of shapes thousands of times: convert each once.
        self._memo: dict[tuple[tuple[str, float], ...], Vector] = {}

    @property
    def size(self) -> int:
        return len(self.names)

    def zeros(self) -> Vector:
        return np.zeros(self.size, dtype=np.int64)

    def vector(self, resources: ResourceMap) -> Vector:
        """Fixed-point vector of a resource map (read-only; names must be in the space)."""
        key = tuple(resources.items())
        vec = self._memo.get(key)
        if vec is None:
            vec = self.zeros()
            for name, amount in key:
                i = self.index[name]
                scale = int(self._scale[i])
                # bytes round up: a fraction of a byte must not look like nothing
                vec[i] = math.ceil(amount) if scale == 1 else round(amount * scale)
            vec.flags.writeable = False
            self._memo[key] = vec
        return vec

    def matrix(
        self, maps: Sequence[ResourceMap | None]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Many resource maps as a (len(maps) x size) matrix, fixed-point and as given.

        A None map is a row of zeros. The fixed-point rows are the same numbers
        as :meth:`vector`, built one resource at a time: a cluster's 10,000
        node maps are converted in a few milliseconds instead of one Python
        call per node. Amounts too large for a float to hold exactly take the
        row-by-row path. The second matrix holds the amounts as given (as
        floats), for sizes that must match a plain-float computation.
        """
        fixed = np.zeros((len(maps), self.size), dtype=np.int64)
        given = np.zeros((len(maps), self.size), dtype=np.float64)
        if not maps:
            return fixed, given
        rows: list[ResourceMap] = [{} if m is None else m for m in maps]
        get: Callable[[ResourceMap, str, float], float] = dict.get  # type: ignore[assignment]
        for j, name in enumerate(self.names):
            try:  # dict.get over all rows at C speed (every map is a dict in practice)
                values: Iterable[float] = map(get, rows, repeat(name), repeat(0.0))
                given[:, j] = np.fromiter(values, dtype=np.float64, count=len(rows))
            except TypeError:
                values = (m.get(name, 0.0) for m in rows)
                given[:, j] = np.fromiter(values, dtype=np.float64, count=len(rows))
        exact = all(
            given[:, j].max() * int(self._scale[j]) < _EXACT for j in range(self.size)
        )
        if not exact:
            return np.stack([self.vector(m) if m else self.zeros() for m in maps]), given
        for j in range(self.size):
            scale = int(self._scale[j])
            # bytes round up; np.rint rounds half to even, like round()
            fixed[:, j] = np.ceil(given[:, j]) if scale == 1 else np.rint(given[:, j] * scale)
        return fixed, given

    def to_map(self, vec: Vector) -> dict[str, float]:
        """Back to a resource map, leaving out zero entries."""
        out: dict[str, float] = {}
        for i, name in enumerate(self.names):
            if vec[i]:
                scale = int(self._scale[i])
                value = int(vec[i])
                out[name] = value if scale == 1 else value / scale
        return out

    def work_mask(self) -> npt.NDArray[np.bool_]:
        """Dimensions whose use means a node is running work."""
        return np.array([n not in NON_WORK_RESOURCES for n in self.names], dtype=np.bool_)


def fit_counts(free: Vector, shape: Vector, cap: int) -> npt.NDArray[np.int64]:
    """How many copies of ``shape`` fit in each row of ``free`` (at most ``cap``).

    ``free`` is an (n, k) matrix; a shape of all zeros fits ``cap`` times anywhere.
    """
    cap = min(cap, INT64_MAX)
    nonzero = np.flatnonzero(shape)
    if nonzero.size == 0:
        return np.full(free.shape[0], cap, dtype=np.int64)
    counts = (np.maximum(free[:, nonzero], 0) // shape[nonzero]).min(axis=1)
    capped: Vector = np.minimum(counts, cap)
    return capped


def fits_once(free: Vector, shape: Vector) -> bool:
    """Whether one ``shape`` fits in the single vector ``free``."""
    return bool(np.all(free >= shape))
