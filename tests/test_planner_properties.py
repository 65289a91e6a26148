"""The four properties of plan-format.md, for any input hypothesis can think of."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayscale.planner import plan_json
from tests import plancheck

RESOURCES = ("CPU", "GPU", "memory", "custom")
STRATEGIES = ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]

amount = st.sampled_from([0, 0.5, 1, 1, 2, 3, 4])


@st.composite
def shapes(draw: st.DrawFn, allow_empty: bool = False) -> dict[str, float]:
    shape = {r: draw(amount) for r in draw(st.sets(st.sampled_from(RESOURCES), max_size=3))}
    # memory is in whole bytes, as Ray reports it
    shape = {k: (int(v * 2) if k == "memory" else v) for k, v in shape.items()}
    shape = {k: v for k, v in shape.items() if v > 0}
    if not shape and not allow_empty:
        shape = {"CPU": 1}
    return shape


LABELS = {"zone": ["a", "b"], "market": ["spot", "on-demand"]}
#: Selectors in each of Ray's forms; "zone: c" no node ever has.
SELECTORS = [
    {"zone": "a"}, {"zone": "!a"}, {"market": "in(spot,on-demand)"}, {"market": "!in(spot)"},
    {"zone": "b", "market": "spot"}, {"zone": "c"},
]


@st.composite
def labels(draw: st.DrawFn) -> dict[str, str]:
    keys = draw(st.sets(st.sampled_from(sorted(LABELS))))
    return {k: draw(st.sampled_from(LABELS[k])) for k in sorted(keys)}


@st.composite
def selected(draw: st.DrawFn, entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with a label selector (and maybe fallbacks), or as it is."""
    if draw(st.booleans()):
        return entry
    out = {**entry, "label_selector": draw(st.sampled_from(SELECTORS))}
    fallbacks = draw(st.lists(st.sampled_from(SELECTORS), max_size=2))
    if fallbacks:
        out["fallback_strategy"] = [{"label_selector": f} for f in fallbacks]
    return out


def _label(draw: st.DrawFn, state: dict[str, Any]) -> dict[str, Any]:
    """Ray labels on groups and some nodes, label selectors on some demand."""
    for spec in state["groups"].values():
        spec["labels"] = draw(labels())
    for node in state["nodes"]:
        if node["status"] == "running" and draw(st.booleans()):
            node["labels"] = draw(labels())
    demand = state["demand"]
    demand["tasks"] = [draw(selected(t)) for t in demand["tasks"]]
    demand["floor"] = [{k: v for k, v in draw(selected(f)).items() if k != "fallback_strategy"}
                       for f in demand["floor"]]
    for gang in demand["gangs"]:
        if draw(st.booleans()):
            gang["bundle_label_selector"] = [
                draw(st.sampled_from([{}, *SELECTORS])) for _ in gang["bundles"]
            ]
    return state


@st.composite
def states(draw: st.DrawFn, labelled: bool = False) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 3))):
        lo = draw(st.integers(0, 2))
        groups[f"g{i}"] = {
            "resources": draw(shapes()),
            "min": lo,
            "max": draw(st.integers(lo, lo + 5)),
            "priority": draw(st.integers(0, 2)),
            "launchable": draw(st.booleans() | st.just(True)),
            "idle_timeout_s": draw(st.none() | st.sampled_from([0, 30, 120])),
            "memory_target_fraction": draw(st.none() | st.sampled_from([0.5, 0.8])),
        }
    nodes: list[dict[str, Any]] = [
        {"id": "head", "group": "head", "status": "running",
         "total": {"CPU": 1}, "available": {"CPU": draw(st.sampled_from([0, 1]))}, "idle_s": 0}
    ]
    for j in range(draw(st.integers(0, 6))):
        group = draw(st.sampled_from(sorted(groups)))
        status = draw(st.sampled_from(["running", "running", "pending", "terminating"]))
        node: dict[str, Any] = {"id": f"n{j}", "group": group, "status": status}
        if status == "running":
            total = groups[group]["resources"]
            frac = draw(st.sampled_from([0, 0.5, 1]))
            node["total"] = total
            node["available"] = {
                k: (int(v * frac) if k == "memory" else v * frac) for k, v in total.items()
            }
            node["idle_s"] = draw(st.sampled_from([0, 10, 200])) if frac == 1 else 0
            if draw(st.booleans()):
                node["memory_used_fraction"] = draw(st.sampled_from([0.1, 0.6, 0.95]))
        nodes.append(node)
    demand = {
        "tasks": [
            {"resources": draw(shapes()), "count": draw(st.integers(1, 6))}
            for _ in range(draw(st.integers(0, 4)))
        ],
        "gangs": [
            {
                "strategy": draw(st.sampled_from(STRATEGIES)),
                "bundles": [draw(shapes()) for _ in range(draw(st.integers(1, 3)))],
                "count": draw(st.integers(1, 2)),
            }
            for _ in range(draw(st.integers(0, 2)))
        ],
        "floor": [
            {"resources": draw(shapes()), "count": draw(st.integers(1, 3))}
            for _ in range(draw(st.integers(0, 2)))
        ],
    }
    options = {
        "upscaling_mode": draw(st.sampled_from(["Default", "Conservative", "Aggressive"])),
        "idle_timeout_s": draw(st.sampled_from([0, 60])),
        "max_nodes": draw(st.none() | st.integers(0, 12)),
    }
    state = {"groups": groups, "nodes": nodes, "demand": demand, "options": options}
    return _label(draw, state) if labelled else state


#: Half of the states carry Ray labels and label selectors.
ANY_STATE = st.one_of(states(), states(labelled=True))


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(ANY_STATE)
def test_deterministic(state: dict[str, Any]) -> None:
    first = plan_json(copy.deepcopy(state))
    assert plan_json(json.loads(json.dumps(state))) == first


@SETTINGS
@given(ANY_STATE)
def test_sufficient(state: dict[str, Any]) -> None:
    plan = plan_json(state)
    assert plancheck.sufficient(state, plan), plan


@SETTINGS
@given(ANY_STATE)
def test_frugal(state: dict[str, Any]) -> None:
    plan = plan_json(state)
    before = _counts_before(state)
    for group, n in plan["launch"].items():
        assert n > 0
        spec = state["groups"][group]
        needed_for_min = before[group] + n - 1 < spec["min"]
        pending = sum(
            1 for x in state["nodes"] if x["group"] == group and x["status"] == "pending"
            and x["id"] not in {t["id"] for t in plan["terminate"]}
        )
        needed_for_memory = pending + n - 1 < plancheck.memory_need(state, group)
        still_enough = plancheck.sufficient(state, plan, drop=group)
        assert needed_for_min or needed_for_memory or not still_enough, (group, plan)


@SETTINGS
@given(ANY_STATE)
def test_within_bounds(state: dict[str, Any]) -> None:
    plan = plan_json(state)
    after = plancheck.counts_after(state, plan)
    for group, spec in state["groups"].items():
        assert spec["min"] <= after[group] <= spec["max"], (group, after, plan)
    launched_total = sum(plan["launch"].values())
    cap = state["options"]["max_nodes"]
    forced = sum(max(0, s["min"] - _counts_before(state)[g]) for g, s in state["groups"].items())
    if cap is not None and launched_total > forced:
        assert sum(after.values()) <= cap, plan


@SETTINGS
@given(ANY_STATE)
def test_busy_nodes_are_never_idle_terminated(state: dict[str, Any]) -> None:
    plan = plan_json(state)
    by_id = {n["id"]: n for n in state["nodes"]}
    for t in plan["terminate"]:
        node = by_id[t["id"]]
        if t["reason"] in ("idle", "unneeded_pending"):
            assert node["status"] != "running" or plancheck._idle(node, state), (t, node)
        if t["reason"] == "unneeded_pending":
            assert node["status"] == "pending"


def _counts_before(state: dict[str, Any]) -> dict[str, int]:
    out = dict.fromkeys(state["groups"], 0)
    for n in state["nodes"]:
        if n["group"] in out and n["status"] != "terminating":
            out[n["group"]] += 1
    return out
