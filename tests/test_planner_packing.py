"""The vectorised placement primitives against their plain definitions."""

from __future__ import annotations

import numpy as np
import pytest

from rayscale.planner.packing import _first_reaching, fit_columns, place_copies


@pytest.mark.parametrize("size", [1, 5, 1023, 1024, 1025, 3000, 5000])
def test_first_reaching_is_searchsorted_of_the_cumulative_sum(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(50):
        values = rng.integers(0, 4, size).astype(np.int64) * (rng.random(size) < 0.5)
        total = int(values.sum())
        for target in {t for t in (1, total // 3, total - 1, total) if 0 < t <= total}:
            expected = int(np.searchsorted(np.cumsum(values), target, side="left"))
            assert _first_reaching(values, target) == expected


def test_place_copies_is_first_fit_copy_by_copy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        rows = int(rng.integers(1, 60))
        cols = rng.integers(0, 9, (3, rows)).astype(np.int64)
        shape = rng.integers(0, 3, 3).astype(np.int64)
        count = int(rng.integers(1, 40))
        expected = cols.copy()
        left = count
        for r in range(rows):  # copy by copy, first fit
            while left and np.all(expected[:, r] >= shape) and shape.any():
                expected[:, r] -= shape
                left -= 1
        if not shape.any():
            continue  # a shape of zeros: checked by the planner's rules tests
        before = cols.copy()
        used = np.zeros(rows, dtype=np.int8)
        assert place_copies(cols, used, shape, count, 4) == left
        assert np.array_equal(cols, expected)
        assert np.array_equal(used == 4, np.any(before != expected, axis=0))
        assert np.array_equal(
            fit_columns(before, shape, 5),
            [min(5, min(int(before[d, r]) // int(shape[d]) for d in np.flatnonzero(shape)))
             for r in range(rows)],
        )
