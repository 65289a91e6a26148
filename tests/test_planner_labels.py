"""Label selectors in the planner (issue 10): Ray's label_selector, fallback_strategy and
bundle_label_selector choose the worker groups whose labels match."""

from __future__ import annotations

from typing import Any

import pytest

from rayscale.planner import plan_json
from rayscale.planner.state import PlanFormatError
from tests import plancheck

HEAD = {"id": "head", "group": "head", "status": "running",
        "total": {"CPU": 0}, "available": {"CPU": 0}, "idle_s": 0}


def state(groups: dict[str, Any], tasks: list[dict[str, Any]] | None = None,
          gangs: list[dict[str, Any]] | None = None, nodes: list[dict[str, Any]] | None = None,
          floor: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"groups": groups, "nodes": [HEAD, *(nodes or [])],
            "demand": {"tasks": tasks or [], "gangs": gangs or [], "floor": floor or []}}


def planned(doc: dict[str, Any]) -> dict[str, Any]:
    plan = plan_json(doc)
    assert plancheck.sufficient(doc, plan), plan
    return plan


GROUPS = {
    # the plain group is preferred by priority: a selector must still not use it
    "plain": {"resources": {"CPU": 8}, "max": 10, "priority": 9},
    "spot": {"resources": {"CPU": 2}, "max": 10, "labels": {"market": "spot", "zone": "a"}},
    "ondemand": {"resources": {"CPU": 2}, "max": 10,
                 "labels": {"market": "on-demand", "zone": "b"}},
}


def test_a_selector_launches_only_the_matching_group() -> None:
    plan = planned(state(GROUPS, tasks=[
        {"resources": {"CPU": 1}, "count": 3, "label_selector": {"market": "spot"}}]))
    assert plan["launch"] == {"spot": 2}
    assert plan["why"] == {"spot": ["tasks"]}


@pytest.mark.parametrize(("selector", "group"), [
    ({"zone": "b"}, "ondemand"),
    ({"market": "in(on-demand,reserved)"}, "ondemand"),
    ({"market": "!spot", "zone": "in(a,b)"}, "ondemand"),
    ({"market": "!in(spot,on-demand)"}, "plain"),  # no market label at all matches
    ({"zone": "!b"}, "plain"),  # the plain group (no zone) and spot match: priority decides
])
def test_each_form_of_condition(selector: dict[str, str], group: str) -> None:
    plan = planned(state(GROUPS, tasks=[
        {"resources": {"CPU": 2}, "count": 1, "label_selector": selector}]))
    assert plan["launch"] == {group: 1}


def test_no_group_matching_is_infeasible_and_echoed_with_its_selector() -> None:
    plan = planned(state(GROUPS, tasks=[
        {"resources": {"CPU": 1}, "count": 2, "label_selector": {"market": "gpu"}},
        {"resources": {"CPU": 1}, "count": 1}]))
    assert plan["launch"] == {"plain": 1}
    assert plan["infeasible"]["tasks"] == [
        {"resources": {"CPU": 1}, "count": 2, "label_selector": {"market": "gpu"}}]


def test_the_first_alternative_a_group_matches_wins_over_priority() -> None:
    groups = {**GROUPS, "ondemand": {**GROUPS["ondemand"], "priority": 50}}
    task = {"resources": {"CPU": 1}, "count": 1, "label_selector": {"market": "spot"},
            "fallback_strategy": [{"label_selector": {"market": "on-demand"}}]}
    assert planned(state(groups, tasks=[task]))["launch"] == {"spot": 1}


@pytest.mark.parametrize("why_not", ["backing off", "at max", "no such group"])
def test_the_fallback_is_used_when_the_first_choice_cannot_launch(why_not: str) -> None:
    groups = {k: dict(v) for k, v in GROUPS.items()}
    if why_not == "backing off":
        groups["spot"]["launchable"] = False
    elif why_not == "at max":
        groups["spot"]["max"] = 0
    else:
        del groups["spot"]
    task = {"resources": {"CPU": 1}, "count": 4, "label_selector": {"market": "spot"},
            "fallback_strategy": [{"label_selector": {"zone": "b"}}]}
    plan = planned(state(groups, tasks=[task]))
    assert plan["launch"] == {"ondemand": 2}
    assert plan["capped"]["tasks"] == plan["infeasible"]["tasks"] == []


def test_a_running_node_with_matching_labels_takes_the_work_first() -> None:
    # the node's own labels (as Ray reports them) count, not only its group's
    node = {"id": "w1", "group": "plain", "status": "running", "total": {"CPU": 8},
            "available": {"CPU": 8}, "idle_s": 0, "labels": {"ray.io/node-id": "abc"}}
    plan = planned(state(GROUPS, nodes=[node], tasks=[
        {"resources": {"CPU": 1}, "count": 8, "label_selector": {"ray.io/node-id": "abc"}},
        {"resources": {"CPU": 1}, "count": 1, "label_selector": {"ray.io/node-id": "def"}}]))
    assert plan["launch"] == {}
    assert plan["infeasible"]["tasks"][0]["label_selector"] == {"ray.io/node-id": "def"}


def test_a_busy_labelled_node_does_not_hold_more_than_it_has() -> None:
    node = {"id": "s1", "group": "spot", "status": "running", "total": {"CPU": 2},
            "available": {"CPU": 1}, "idle_s": 0}
    plan = planned(state(GROUPS, nodes=[node], tasks=[
        {"resources": {"CPU": 1}, "count": 3, "label_selector": {"zone": "a"}}]))
    assert plan["launch"] == {"spot": 1}


def test_bundle_selectors_put_each_bundle_on_its_group() -> None:
    gang = {"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1}, {"CPU": 1}, {"CPU": 1}],
            "bundle_label_selector": [{"zone": "a"}, {"zone": "b"}, {"zone": "a"}]}
    plan = planned(state(GROUPS, gangs=[gang]))
    assert plan["launch"] == {"spot": 2, "ondemand": 1}


def test_strict_pack_needs_one_node_matching_every_bundle() -> None:
    fits = {"strategy": "STRICT_PACK", "bundles": [{"CPU": 1}, {"CPU": 1}],
            "bundle_label_selector": [{"zone": "a"}, {"market": "spot"}]}
    assert planned(state(GROUPS, gangs=[fits]))["launch"] == {"spot": 1}
    never = {**fits, "bundle_label_selector": [{"zone": "a"}, {"zone": "b"}]}
    plan = planned(state(GROUPS, gangs=[never]))
    assert plan["launch"] == {}
    assert plan["infeasible"]["gangs"] == [{**never, "count": 1}]


def test_a_selector_with_no_resources_still_needs_a_matching_node() -> None:
    plan = planned(state(GROUPS, tasks=[
        {"resources": {}, "count": 5, "label_selector": {"zone": "b"}}]))
    assert plan["launch"] == {"ondemand": 1}


def test_floor_bundles_with_selectors() -> None:
    plan = planned(state(GROUPS, floor=[
        {"resources": {"CPU": 2}, "count": 2, "label_selector": {"market": "on-demand"}}]))
    assert plan["launch"] == {"ondemand": 2}


def test_idle_nodes_the_selected_demand_needs_are_kept() -> None:
    idle = [{"id": f"s{i}", "group": "spot", "status": "running", "total": {"CPU": 2},
             "available": {"CPU": 2}, "idle_s": 500} for i in range(2)]
    doc = state(GROUPS, nodes=idle, tasks=[
        {"resources": {"CPU": 2}, "count": 1, "label_selector": {"market": "spot"}}])
    plan = planned(doc)
    assert plan["launch"] == {}
    assert [t["reason"] for t in plan["terminate"]] == ["idle"]  # one is needed, one goes


def test_documents_without_labels_plan_as_before() -> None:
    doc = state({"g": {"resources": {"CPU": 2}, "max": 3}},
                tasks=[{"resources": {"CPU": 1}, "count": 4}])
    assert plan_json(doc)["launch"] == {"g": 2}


@pytest.mark.parametrize(("doc", "message"), [
    ({"demand": {"tasks": [{"resources": {}, "label_selector": {"zone": "in(a,"}}]}},
     "demand.tasks[0].label_selector.zone: invalid label selector condition 'in(a,'"),
    ({"demand": {"tasks": [{"resources": {}, "label_selector": {"zone": 3}}]}},
     "demand.tasks[0].label_selector.zone: Input should be a valid string"),
    ({"demand": {"tasks": [{"resources": {}, "label_selector": {"a": "b"},
                            "fallback_strategy": [{"label_selector": {"-a": "b"}}]}]}},
     "demand.tasks[0].fallback_strategy[0].label_selector.-a: invalid label key '-a'"),
    ({"demand": {"gangs": [{"strategy": "PACK", "bundles": [{"CPU": 1}],
                            "bundle_label_selector": [{}, {}]}]}},
     "demand.gangs[0].bundle_label_selector: one selector per bundle, got 2 for 1 bundles"),
    ({"groups": {"g": {"resources": {"CPU": 1}, "labels": {"zone": 1}}}},
     "groups.g.labels.zone: Input should be a valid string"),
    ({"nodes": [{"id": "h", "group": "h", "status": "running", "labels": {"a b": "c"}}]},
     "nodes[0].labels: invalid label key 'a b'"),
])
def test_bad_selectors_and_labels_name_their_path(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanFormatError) as err:
        plan_json(doc)
    assert str(err.value).startswith(message), str(err.value)
