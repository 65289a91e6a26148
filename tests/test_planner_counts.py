"""Issue 9: counts cost nothing.

The planner's work depends on distinct shapes and nodes, not on how many
copies of a shape wait: launched nodes are segments (one column for a billion
nodes), copies are placed arithmetically, and a gang's copies are placed in
periods (packing.py). These tests generate states and compare:

- memory with counts up to 1e12 against the same state with every count 1
  (a small constant; the time is measured in bench/planner_counts.py, not
  asserted: a shared machine makes time bounds flaky);
- plans with a huge count and with a count just past what the groups' max
  could ever hold (the same plan: the rest is capped, not expanded);
- plans with the shortcuts and without them (the same plan, exactly).

Memory is exact (tracemalloc).
"""

from __future__ import annotations

import copy
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayscale.planner import packing, plan_json
from tests.test_planner_properties import STRATEGIES, shapes

FAST = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def states(draw: st.DrawFn, unbounded: bool = True, most: int = 6) -> dict[str, Any]:
    """Like test_planner_properties' states, with bigger nodes, more gangs and, when
    ``unbounded``, groups and clusters without a max."""
    groups: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 3))):
        lo = draw(st.integers(0, 2))
        resources = draw(shapes())
        factor = draw(st.sampled_from([1, 1, 2, 4, 8]))
        groups[f"g{i}"] = {
            "resources": {k: v * factor for k, v in resources.items()},
            "min": lo,
            "max": draw((st.none() if unbounded else st.nothing()) | st.integers(lo, lo + most)),
            "priority": draw(st.integers(0, 2)),
            "launchable": draw(st.booleans() | st.just(True)),
        }
    nodes: list[dict[str, Any]] = [
        {"id": "head", "group": "head", "status": "running",
         "total": {"CPU": 1}, "available": {"CPU": draw(st.sampled_from([0, 1]))}, "idle_s": 0}
    ]
    for j in range(draw(st.integers(0, 5))):
        group = draw(st.sampled_from(sorted(groups)))
        status = draw(st.sampled_from(["running", "running", "pending"]))
        node: dict[str, Any] = {"id": f"n{j}", "group": group, "status": status}
        if status == "running":
            total = groups[group]["resources"]
            frac = draw(st.sampled_from([0, 0.5, 1]))
            node["total"] = total
            node["available"] = {
                k: (int(v * frac) if k == "memory" else v * frac) for k, v in total.items()
            }
            node["idle_s"] = draw(st.sampled_from([0, 200])) if frac == 1 else 0
        nodes.append(node)
    count = st.integers(1, 4)
    demand = {
        "tasks": [{"resources": draw(shapes()), "count": draw(count)}
                  for _ in range(draw(st.integers(0, 3)))],
        "gangs": [
            {"strategy": draw(st.sampled_from(STRATEGIES)),
             "bundles": [draw(shapes()) for _ in range(draw(st.integers(1, 3)))],
             "count": draw(count)}
            for _ in range(draw(st.integers(0, 2)))
        ],
        "floor": [{"resources": draw(shapes()), "count": draw(count)}
                  for _ in range(draw(st.integers(0, 2)))],
    }
    options = {
        "upscaling_mode": draw(st.sampled_from(["Default", "Conservative", "Aggressive"])),
        "idle_timeout_s": 60,
        "max_nodes": draw((st.none() if unbounded else st.nothing()) | st.integers(0, 20)),
    }
    return {"groups": groups, "nodes": nodes, "demand": demand, "options": options}


def with_counts(state: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    out = copy.deepcopy(state)
    entries = [e for kind in ("floor", "gangs", "tasks") for e in out["demand"][kind]]
    for entry, n in zip(entries, counts, strict=False):
        entry["count"] = n
    return out


def entries(state: dict[str, Any]) -> int:
    return sum(len(state["demand"][kind]) for kind in ("floor", "gangs", "tasks"))


def cost(state: dict[str, Any]) -> int:
    """The peak traced memory of planning ``state`` (after a first, warming plan)."""
    plan_json(copy.deepcopy(state))
    tracemalloc.start()
    try:
        plan_json(copy.deepcopy(state))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


@FAST
@given(states(), st.data())
def test_memory_does_not_grow_with_counts(state: dict[str, Any], data: Any) -> None:
    n = entries(state)
    huge = [10 ** data.draw(st.integers(6, 12)) for _ in range(n)]
    one_memory = cost(with_counts(state, [1] * n))
    huge_memory = cost(with_counts(state, huge))
    # tracemalloc counts every thread of the test process: the 4 MB of slack absorbs
    # what other tests' leftover threads allocate meanwhile; expanding even the
    # smallest count drawn (10**6) would take at least 8 MB of pointers
    assert huge_memory <= 4 * one_memory + 4_000_000, (huge_memory, one_memory, huge)


@FAST
@given(states(unbounded=False), st.data())
def test_a_count_beyond_every_max_is_capped_not_expanded(
    state: dict[str, Any], data: Any
) -> None:
    """With every group bounded, 1e12 copies plan exactly like 10^4 (more than
    the groups could ever hold: max <= 8 nodes of at most 32 units each), with
    the difference reported as capped or infeasible."""
    n = entries(state)
    which = [data.draw(st.booleans()) for _ in range(n)]
    small = with_counts(state, [10**4 if w else 1 for w in which])
    large = with_counts(state, [10**12 if w else 1 for w in which])
    a, b = plan_json(small), plan_json(large)
    assert (a["launch"], a["why"], a["terminate"]) == (b["launch"], b["why"], b["terminate"])
    for part in ("infeasible", "capped"):
        for kind in ("tasks", "gangs", "floor"):
            left = [{**e, "count": e["count"] % 10**4} for e in a[part][kind]]
            right = [{**e, "count": e["count"] % 10**4} for e in b[part][kind]]
            assert left == right, (part, kind, a, b)
    assert sum(_left(b)) - sum(_left(a)) == (10**12 - 10**4) * sum(which)


def _left(plan: dict[str, Any]) -> list[int]:
    return [e["count"] for part in ("infeasible", "capped")
            for kind in ("tasks", "gangs", "floor") for e in plan[part][kind]]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(states(most=12), st.data())
def test_the_shortcuts_change_nothing(state: dict[str, Any], data: Any) -> None:
    """Repeated copies and gang periods give the very plan that placing every
    copy on its own gives (counts up to 40: slow enough without them)."""
    n = entries(state)
    doc = with_counts(state, [data.draw(st.integers(1, 40)) for _ in range(n)])
    fast = plan_json(copy.deepcopy(doc))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(packing, "_repeat_copies", lambda table, where, most: 0)
        patch.setattr(packing, "_fast_forward", lambda *args: 0)
        patch.setattr(packing, "_tidy", lambda segs: None)
        slow = plan_json(copy.deepcopy(doc))
    assert fast == slow


def _rows(segs: list[packing.Segment]) -> list[tuple[bytes, bytes, int]]:
    return [
        (seg.free[:, c].tobytes(), seg.total[:, c].tobytes(), int(seg.used[c]))
        for seg in segs for _ in range(seg.repeat) for c in range(seg.width)
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 5),
                          st.integers(0, 1)), max_size=12))
def test_tidy_keeps_every_node_in_order(
    parts: list[tuple[int, int, int, int]],
) -> None:
    """_tidy only regroups: the nodes, in order, are the same (values from a few kinds)."""
    segs = [
        packing.Segment(np.full((2, width), value, dtype=np.int64),
                        np.full((2, width), 3, dtype=np.int64),
                        np.full(width, bit, dtype=np.int8), repeat)
        for value, width, repeat, bit in parts
    ]
    before = _rows(segs)
    packing._tidy(segs)
    assert _rows(segs) == before


# --------------------------------------------------------------- examples


def _planned(doc: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The plan and the peak memory it took: work proportional to the counts would show
    there (the time it takes is measured in bench/planner_counts.py, not asserted here:
    a loaded machine makes any time bound flaky)."""
    tracemalloc.start()
    try:
        plan = plan_json(doc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return plan, peak


@pytest.mark.parametrize("count", [1, 10**7, 10**9, 10**12])
@pytest.mark.parametrize("kind", ["tasks", "floor"])
def test_the_issue_s_identical_tasks_without_a_max(kind: str, count: int) -> None:
    """1e9 identical tasks and no max tried to allocate 30 GiB; 1e7 took 22 s and 2.3 GB."""
    doc = {"groups": {"small": {"resources": {"CPU": 1}, "max": None}},
           "demand": {kind: [{"resources": {"CPU": 1}, "count": count}]}}
    plan, peak = _planned(doc)
    assert plan["launch"] == {"small": count}
    assert peak < 2_000_000, peak


GANGS = {
    # Ray Tune: a trial's GPU worker and its CPU driver, on 8-CPU 1-GPU nodes
    "tune-pack": ({"gpu": {"resources": {"CPU": 8, "GPU": 1}}}, "PACK",
                  [{"CPU": 1, "GPU": 1}, {"CPU": 1}], {"gpu": 1}),
    "ddp-spread": ({"gpu8": {"resources": {"CPU": 64, "GPU": 8}}}, "STRICT_SPREAD",
                   [{"GPU": 1, "CPU": 4}] * 4, {"gpu8": 4 / 8}),
    "strict-pack": ({"cpu": {"resources": {"CPU": 16}}}, "STRICT_PACK",
                    [{"CPU": 3}, {"CPU": 2}], {"cpu": 1 / 3}),
    "spread-mixed": (
        {"cpu": {"resources": {"CPU": 16}}, "gpu": {"resources": {"CPU": 8, "GPU": 2}}},
        "SPREAD", [{"CPU": 2, "GPU": 1}, {"CPU": 4}, {"CPU": 1}], {"cpu": 0.1875, "gpu": 0.5},
    ),
}


@pytest.mark.parametrize("name", sorted(GANGS))
def test_gang_copies_fall_into_periods(name: str) -> None:
    groups, strategy, bundles, per_copy = GANGS[name]
    doc = {"groups": {g: {**spec, "max": None} for g, spec in groups.items()},
           "demand": {"gangs": [{"strategy": strategy, "bundles": bundles, "count": 10**12}]}}
    plan, peak = _planned(doc)
    assert plan["capped"]["gangs"] == []
    for group, nodes in per_copy.items():
        assert plan["launch"][group] == pytest.approx(nodes * 10**12, rel=1e-9)
    assert peak < 5_000_000, peak


def test_a_gang_that_never_falls_into_a_period_is_capped_after_its_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only GANG_STEPS copies of a gang are placed on their own per round (here 40):
    the rest is reported capped, and the plan holds what it places."""
    from tests import plancheck

    monkeypatch.setattr(packing, "GANG_STEPS", 40)
    groups = {"small": {"resources": {"CPU": 4}, "max": None},
              "big": {"resources": {"CPU": 3, "GPU": 1}, "max": None}}
    gang = {"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 3}, {"CPU": 2}, {"GPU": 1}]}
    doc = {"groups": groups, "nodes": [], "demand": {"gangs": [{**gang, "count": 10**12}]}}
    plan = plan_json(copy.deepcopy(doc))
    [capped] = plan["capped"]["gangs"]
    placed = 10**12 - capped["count"]
    assert 40 <= placed < 100, plan
    small = {**doc, "demand": {"gangs": [{**gang, "count": placed}]}}
    assert plancheck.sufficient(small, {**plan, "capped": {"tasks": [], "gangs": [], "floor": []}})
