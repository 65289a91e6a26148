"""Waste: launches that one node fewer would also hold, found by seeded random search.

``plancheck`` checks sufficiency and frugality with the documented checking
order (first-fit-decreasing, docs/planner.md). ``packcheck`` tries other
reasonable greedy packings too (larger items first by CPU, by memory or by
dominant share; best fit that keeps GPU nodes for GPU demand).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rayscale.planner import plan_json
from tests import packcheck, plancheck

State = dict[str, Any]
SEEDS = 600


def _states(make: Callable[[random.Random], State], seeds: int) -> Iterator[tuple[int, State]]:
    for seed in range(seeds):
        yield seed, make(random.Random(seed))


def _forced(state: State, plan: dict[str, Any], group: str) -> bool:
    """Whether min or the memory target needs every launched node of ``group``."""
    gone = {t["id"] for t in plan["terminate"]}
    n = plan["launch"][group]
    nodes = [x for x in state["nodes"] if x["group"] == group]
    live = sum(1 for x in nodes if x["status"] != "terminating")
    pending = sum(1 for x in nodes if x["status"] == "pending" and x["id"] not in gone)
    spec = state["groups"][group]
    return live + n - 1 < spec.get("min", 0) or (
        pending + n - 1 < plancheck.memory_need(state, group)
    )


@pytest.mark.parametrize("make", [packcheck.packing_state, packcheck.random_state])
def test_sufficient_and_frugal_in_the_checking_order(
    make: Callable[[random.Random], State],
) -> None:
    """Sizes tie often here (few distinct amounts): ties must follow the documented order."""
    for seed, state in _states(make, SEEDS):
        plan = plan_json(state)
        assert plancheck.sufficient(state, plan), (seed, plan)
        for group in plan["launch"]:
            if not _forced(state, plan, group):
                assert not plancheck.sufficient(state, plan, drop=group), (seed, group, plan)


def test_shapes_of_equal_size_are_placed_in_document_order() -> None:
    # memory 3 and {CPU 1, memory 1} both have size 0.75 here. In document
    # order the 7 memory-3 tasks take 7 nodes and everything else fits
    # beside them; the other way round needs an 8th node.
    state = {
        "groups": {"g": {"resources": {"CPU": 2, "memory": 4}, "min": 0, "max": 100}},
        "nodes": [],
        "demand": {"tasks": [
            {"resources": {"memory": 3}, "count": 7},
            {"resources": {"CPU": 1}, "count": 5},
            {"resources": {"CPU": 1, "memory": 1}, "count": 2},
        ]},
    }
    plan = plan_json(state)
    assert plan["launch"] == {"g": 7}
    assert plancheck.sufficient(state, plan)


@pytest.mark.xfail(
    strict=True,
    reason="contract conflict: with one node fewer, only another packing order holds the"
    " demand, so that plan would not be sufficient in the documented checking order"
    " (docs/planner.md, 'Waste under other packings')",
)
def test_no_launch_is_wasted_under_any_greedy_packing() -> None:
    # About 1 state in 24 of packing_state (the first at seed 9), and 2 in
    # 3,000 of test_planner_properties' strategy.
    for seed, state in _states(packcheck.packing_state, SEEDS):
        plan = plan_json(state)
        assert not packcheck.wasted(state, plan), (seed, plan)


def test_small_shape_launched_in_front_of_larger_demand_still_converges() -> None:
    # The memory-4 task needs a g0 node of its own. Launched late in a pass,
    # that node lands in front of the g1 nodes the CPU-3 tasks used: in the
    # next pass a CPU-3 task takes it, and the memory-4 task asks for one
    # more, one node per pass. (This used to stop after 8 passes with a plan
    # that did not hold the demand: 8 g0 + 8 unused g1 nodes.)
    state = {
        "groups": {
            "g0": {"resources": {"CPU": 4, "memory": 4}, "min": 0, "max": 60},
            "g1": {"resources": {"CPU": 4, "memory": 2}, "min": 0, "max": 60},
        },
        "nodes": [
            {"id": "n0", "group": "g0", "status": "running", "total": {"CPU": 4, "memory": 4},
             "available": {"CPU": 4, "memory": 4}, "idle_s": 0},
        ],
        "demand": {"tasks": [
            {"resources": {"CPU": 3, "memory": 2}, "count": 9},
            {"resources": {"CPU": 0.5, "memory": 4}, "count": 1},
        ]},
    }
    plan = plan_json(state)
    assert plancheck.sufficient(state, plan), plan
    assert plan["launch"] == {"g0": 9}
    assert not plancheck.sufficient(state, plan, drop="g0")


@pytest.mark.parametrize("seed", [1895, 2091, 2315])
def test_plans_that_took_more_than_eight_passes_are_sufficient(seed: int) -> None:
    state = packcheck.packing_state(random.Random(seed))
    plan = plan_json(state)
    assert plancheck.sufficient(state, plan), plan
    for group in plan["launch"]:
        assert not plancheck.sufficient(state, plan, drop=group), (group, plan)
