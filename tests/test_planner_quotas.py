"""Quotas in the planner's contract (plan-format.md, "Quotas"): launches stay within what
each quota has left, demand beyond it is capped and says which limit held it, and the
other properties still hold."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayscale.planner import plan_json
from tests import plancheck
from tests.test_planner_properties import SETTINGS, states

REASONS = {"max", "max_nodes", "conservative", "backoff"}


def cluster(**groups: dict[str, Any]) -> dict[str, Any]:
    return {"groups": groups,
            "nodes": [{"id": "head", "group": "head", "status": "running",
                       "total": {"CPU": 0}, "available": {"CPU": 0}}],
            "demand": {"tasks": [{"resources": {"CPU": 1}, "count": 8}]}}


def group(cpu: int, priority: int = 0, cost: bool = True, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": {"CPU": cpu}, "max": 10, "priority": priority, **extra}
    if cost:
        spec["cost"] = {"pods": 1, "requests.cpu": cpu}
    return spec


QUOTA = {"name": "team-a/compute", "left": {"pods": 3, "requests.cpu": 6}}


def test_launches_stop_at_the_quota_and_the_rest_is_capped_by_it() -> None:
    state = {**cluster(small=group(1, priority=10), big=group(4)), "quotas": [QUOTA]}
    plan = plan_json(state)
    assert plan["launch"] == {"small": 3}
    assert plan["capped"]["tasks"] == [{"resources": {"CPU": 1}, "count": 5}]
    assert plan["limited"] == {"small": "quota:team-a/compute", "big": "quota:team-a/compute"}


def test_demand_falls_through_to_a_group_outside_the_quota() -> None:
    state = {**cluster(small=group(1, priority=10), elastic=group(1, cost=False)),
             "quotas": [QUOTA]}
    plan = plan_json(state)
    assert plan["launch"] == {"small": 3, "elastic": 5}
    assert "limited" not in plan and not plan["capped"]["tasks"]


def test_a_quota_counts_pending_launches_of_every_group_it_covers() -> None:
    # big takes 4 of the 6 CPUs left: small may add 2, then pods (3) run out
    state = {**cluster(big=group(4, priority=10, max=1), small=group(1)), "quotas": [QUOTA]}
    plan = plan_json(state)
    assert plan["launch"] == {"big": 1, "small": 2}
    assert plan["limited"] == {"big": "max", "small": "quota:team-a/compute"}


def test_min_is_kept_within_the_quota() -> None:
    state = {**cluster(small=group(1, min=5)), "quotas": [QUOTA]}
    state["demand"] = {}
    assert plan_json(state)["launch"] == {"small": 3}


def test_fractional_amounts_are_not_lost_to_rounding() -> None:
    state = cluster(small={"resources": {"CPU": 1}, "max": 10,
                           "cost": {"requests.cpu": 0.1}})
    state["quotas"] = [{"name": "q", "left": {"requests.cpu": 0.3}}]
    assert plan_json(state)["launch"] == {"small": 3}


def test_documents_without_quotas_plan_as_before() -> None:
    state = cluster(small=group(1))
    without = plan_json({**state, "groups": {"small": group(1, cost=False)}})
    assert plan_json(state) == without == plan_json({**state, "quotas": []})
    assert without["launch"] == {"small": 8} and "limited" not in without


@pytest.mark.parametrize(("doc", "message"), [
    ({"quotas": [{"name": "", "left": {}}]}, "quotas[0].name"),
    ({"quotas": [{"name": "q", "left": {"pods": -1}}]}, "quotas[0].left.pods"),
    ({"quotas": [{"name": "q"}]}, "quotas[0].left"),
    ({"quotas": {"name": "q"}}, "quotas"),
    ({"groups": {"small": {"resources": {}, "cost": {"pods": "1"}}}}, "groups.small.cost.pods"),
])
def test_bad_quotas_are_refused_naming_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan_json(doc)


@st.composite
def quota_states(draw: st.DrawFn) -> dict[str, Any]:
    state = draw(states())
    for spec in state["groups"].values():
        if draw(st.booleans()):
            spec["cost"] = {"pods": 1, "cpu": spec["resources"].get("CPU", 0)}
    state["quotas"] = [{"name": f"q{i}", "left": {
        "pods": draw(st.integers(0, 6)), "cpu": draw(st.sampled_from([0, 0.5, 2, 3.5, 8]))}}
        for i in range(draw(st.integers(1, 2)))]
    return state


@SETTINGS
@given(quota_states())
def test_quota_properties(state: dict[str, Any]) -> None:
    plan = plan_json(copy.deepcopy(state))
    assert plan_json(json.loads(json.dumps(state))) == plan, "deterministic"
    assert plancheck.sufficient(state, plan), plan
    for quota in state["quotas"]:
        for key, left in quota["left"].items():
            used = sum(n * state["groups"][g].get("cost", {}).get(key, 0)
                       for g, n in plan["launch"].items())
            assert used <= left + 1e-9, (quota, plan)
    for g, reason in plan.get("limited", {}).items():
        assert reason in REASONS or reason.startswith("quota:q"), (g, reason)
    before = dict.fromkeys(state["groups"], 0)
    for node in state["nodes"]:
        if node["group"] in before and node["status"] != "terminating":
            before[node["group"]] += 1
    for g, n in plan["launch"].items():  # frugal: every launched node is needed
        spec = state["groups"][g]
        pending = sum(1 for x in state["nodes"] if x["group"] == g and x["status"] == "pending"
                      and x["id"] not in {t["id"] for t in plan["terminate"]})
        needed = (before[g] + n - 1 < spec["min"]
                  or pending + n - 1 < plancheck.memory_need(state, g)
                  or not plancheck.sufficient(state, plan, drop=g))
        assert needed, (g, plan)
