"""One test per planner rule, including the scenario kinds Ray's own scheduler tests use."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from rayscale.planner import PlanFormatError, plan_json

GiB = 1 << 30


def group(resources: dict[str, float], **kw: Any) -> dict[str, Any]:
    return {"resources": resources, "min": 0, "max": 10, **kw}


def running(
    node_id: str, grp: str, total: dict[str, float], free: dict[str, float] | None = None,
    idle_s: float = 0, **kw: Any,
) -> dict[str, Any]:
    return {"id": node_id, "group": grp, "status": "running", "total": total,
            "available": total if free is None else free, "idle_s": idle_s, **kw}


def pending(node_id: str, grp: str) -> dict[str, Any]:
    return {"id": node_id, "group": grp, "status": "pending"}


def tasks(*shapes: tuple[dict[str, float], int]) -> dict[str, Any]:
    return {"tasks": [{"resources": r, "count": c} for r, c in shapes]}


HEAD = running("head", "head", {"CPU": 0})


def plan(**state: Any) -> dict[str, Any]:
    return plan_json({"nodes": [HEAD], **state})


def terminated(p: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["reason"] for t in p["terminate"]}


# -------------------------------------------------------------- shapes & types


def test_gpu_shapes_choose_the_gpu_node_type_and_cpu_shapes_avoid_it() -> None:
    p = plan(
        groups={"cpu": group({"CPU": 4}), "gpu": group({"CPU": 4, "GPU": 1})},
        demand=tasks(({"GPU": 1}, 2), ({"CPU": 1}, 12)),
    )
    # the GPU tasks take no CPU: the 2 GPU nodes also carry 8 CPU tasks, 4 need a CPU node
    assert p["launch"] == {"gpu": 2, "cpu": 1}


def test_cpu_only_demand_never_launches_gpu_nodes_when_a_cpu_type_fits() -> None:
    p = plan(
        groups={"cpu": group({"CPU": 2}), "gpu": group({"CPU": 8, "GPU": 1})},
        demand=tasks(({"CPU": 1}, 4)),
    )
    assert p["launch"] == {"cpu": 2}


def test_least_waste_among_equal_priorities() -> None:
    p = plan(
        groups={"big": group({"CPU": 8}), "small": group({"CPU": 2})},
        demand=tasks(({"CPU": 2}, 1)),
    )
    assert p["launch"] == {"small": 1}


def test_custom_resources_pick_the_group_that_has_them() -> None:
    p = plan(
        groups={"plain": group({"CPU": 4}), "tpu": group({"CPU": 4, "TPU": 4})},
        demand=tasks(({"TPU": 2}, 3)),
    )
    assert p["launch"] == {"tpu": 2}


def test_memory_resource_is_respected() -> None:
    p = plan(
        groups={"s": group({"CPU": 8, "memory": 4 * GiB})},
        demand=tasks(({"CPU": 1, "memory": 3 * GiB}, 2)),
    )
    assert p["launch"] == {"s": 2}


# ------------------------------------------------------------ pending capacity


def test_pending_nodes_absorb_demand() -> None:
    p = plan(
        groups={"s": group({"CPU": 1})},
        nodes=[HEAD, pending("p1", "s"), pending("p2", "s")],
        demand=tasks(({"CPU": 1}, 3)),
    )
    assert p["launch"] == {"s": 1}
    assert p["terminate"] == []


def test_free_capacity_on_running_nodes_is_used_first() -> None:
    p = plan(
        groups={"s": group({"CPU": 4})},
        nodes=[HEAD, running("a", "s", {"CPU": 4}, {"CPU": 3})],
        demand=tasks(({"CPU": 1}, 3)),
    )
    assert p["launch"] == {}


def test_pending_node_nobody_needs_is_cancelled() -> None:
    p = plan(
        groups={"s": group({"CPU": 1})},
        nodes=[HEAD, pending("p1", "s"), pending("p2", "s")],
        demand=tasks(({"CPU": 1}, 1)),
    )
    assert terminated(p) == {"p2": "unneeded_pending"}


def test_pending_nodes_are_kept_for_min() -> None:
    p = plan(groups={"s": group({"CPU": 1}, min=2)}, nodes=[HEAD, pending("p1", "s"),
                                                             pending("p2", "s")])
    assert p["terminate"] == [] and p["launch"] == {}


# ---------------------------------------------------------------- min and max


def test_min_launches_without_demand() -> None:
    p = plan(groups={"s": group({"CPU": 1}, min=3)})
    assert p["launch"] == {"s": 3}
    assert p["why"] == {"s": ["min"]}


def test_max_caps_launches_and_reports_capped_demand() -> None:
    p = plan(groups={"s": group({"CPU": 1}, max=4)}, demand=tasks(({"CPU": 1}, 10)))
    assert p["launch"] == {"s": 4}
    assert p["capped"]["tasks"] == [{"resources": {"CPU": 1}, "count": 6}]


def test_max_counts_running_and_pending() -> None:
    p = plan(
        groups={"s": group({"CPU": 1}, max=3)},
        nodes=[HEAD, running("a", "s", {"CPU": 1}, {"CPU": 0}), pending("b", "s")],
        demand=tasks(({"CPU": 1}, 5)),
    )
    assert p["launch"] == {"s": 1}


def test_over_max_removes_pending_then_idle_then_busy() -> None:
    p = plan(
        groups={"s": group({"CPU": 1}, max=1)},
        nodes=[HEAD, running("busy", "s", {"CPU": 1}, {"CPU": 0}),
               running("idle", "s", {"CPU": 1}, idle_s=5), pending("p", "s")],
    )
    assert [t["id"] for t in p["terminate"]] == ["p", "idle"]
    assert {t["reason"] for t in p["terminate"]} == {"over_max"}


def test_max_nodes_caps_all_groups() -> None:
    p = plan(
        groups={"a": group({"CPU": 1}), "b": group({"CPU": 1})},
        demand=tasks(({"CPU": 1}, 10)),
        options={"max_nodes": 3},
    )
    assert sum(p["launch"].values()) == 3
    assert p["capped"]["tasks"][0]["count"] == 7


# ------------------------------------------------------------------- priority


def test_priority_fallback_regular_then_elastic() -> None:
    p = plan(
        groups={"regular": group({"CPU": 1}, max=2, priority=10),
                "elastic": group({"CPU": 1}, max=10, priority=0)},
        demand=tasks(({"CPU": 1}, 5)),
    )
    assert p["launch"] == {"regular": 2, "elastic": 3}


def test_not_launchable_group_falls_through_at_once() -> None:
    p = plan(
        groups={"regular": group({"CPU": 1}, priority=10, launchable=False),
                "elastic": group({"CPU": 1})},
        demand=tasks(({"CPU": 1}, 3)),
    )
    assert p["launch"] == {"elastic": 3}


def test_demand_only_a_backing_off_group_could_hold_is_capped_not_infeasible() -> None:
    p = plan(groups={"gpu": group({"GPU": 1}, launchable=False)}, demand=tasks(({"GPU": 1}, 1)))
    assert p["launch"] == {}
    assert p["capped"]["tasks"] == [{"resources": {"GPU": 1}, "count": 1}]
    assert p["infeasible"]["tasks"] == []


def test_frugality_beats_priority_when_one_node_can_do_it_all() -> None:
    # the preferred group cannot hold the custom task; one fallback node holds both
    p = plan(
        groups={"a": group({"CPU": 4}, priority=1), "b": group({"CPU": 2, "custom": 1})},
        demand=tasks(({"CPU": 2}, 1), ({"custom": 1}, 1)),
    )
    assert p["launch"] == {"b": 1}


# --------------------------------------------------------------------- gangs


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("STRICT_SPREAD", 3), ("STRICT_PACK", 1), ("PACK", 1), ("SPREAD", 1)],
)
def test_placement_group_strategies(strategy: str, expected: int) -> None:
    p = plan(
        groups={"s": group({"CPU": 4})},
        demand={"gangs": [{"strategy": strategy, "bundles": [{"CPU": 1}] * 3, "count": 1}]},
    )
    assert p["launch"] == {"s": expected}
    assert p["why"] == {"s": ["gangs"]}


def test_strict_spread_needs_distinct_nodes_even_when_one_has_room() -> None:
    p = plan(
        groups={"s": group({"CPU": 4})},
        nodes=[HEAD, running("a", "s", {"CPU": 4})],
        demand={"gangs": [{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1}] * 2}]},
    )
    assert p["launch"] == {"s": 1}


def test_strict_pack_too_big_for_any_node_is_infeasible() -> None:
    p = plan(
        groups={"s": group({"CPU": 4})},
        demand={"gangs": [{"strategy": "STRICT_PACK", "bundles": [{"CPU": 3}, {"CPU": 3}]}]},
    )
    assert p["launch"] == {}
    assert len(p["infeasible"]["gangs"]) == 1


def test_gang_is_placed_whole_or_not_at_all() -> None:
    p = plan(
        groups={"s": group({"CPU": 1}, max=2)},
        demand={"gangs": [{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1}] * 3}]},
    )
    assert p["launch"] == {}
    assert p["capped"]["gangs"][0]["count"] == 1


# --------------------------------------------------------------------- floors


def test_floor_launches_on_total_capacity() -> None:
    p = plan(
        groups={"s": group({"CPU": 1})},
        nodes=[HEAD, running("a", "s", {"CPU": 1}, {"CPU": 0})],
        demand={"floor": [{"resources": {"CPU": 1}, "count": 3}]},
    )
    # the busy node's total counts toward the floor
    assert p["launch"] == {"s": 2}
    assert p["why"] == {"s": ["floor"]}


def test_floor_keeps_idle_nodes() -> None:
    idle = [running(f"i{k}", "s", {"CPU": 1}, idle_s=500) for k in range(3)]
    p = plan(
        groups={"s": group({"CPU": 1})},
        nodes=[HEAD, *idle],
        demand={"floor": [{"resources": {"CPU": 1}, "count": 2}]},
    )
    assert len(p["terminate"]) == 1 and p["launch"] == {}


# ------------------------------------------------------------------ scale-down


def test_idle_nodes_past_timeout_go_longest_idle_first_within_min() -> None:
    p = plan(
        groups={"s": group({"CPU": 1}, min=1)},
        nodes=[HEAD, running("a", "s", {"CPU": 1}, idle_s=100),
               running("b", "s", {"CPU": 1}, idle_s=300),
               running("c", "s", {"CPU": 1}, idle_s=200)],
    )
    assert [t["id"] for t in p["terminate"]] == ["b", "c"]


def test_group_idle_timeout_overrides_the_default() -> None:
    nodes = [HEAD, running("a", "s", {"CPU": 1}, idle_s=100)]
    keep = plan(groups={"s": group({"CPU": 1}, idle_timeout_s=600)}, nodes=nodes)
    drop = plan(groups={"s": group({"CPU": 1})}, nodes=nodes)
    assert keep["terminate"] == []
    assert terminated(drop) == {"a": "idle"}


def test_busy_node_is_never_idle_terminated_even_if_ray_says_idle() -> None:
    p = plan(
        groups={"s": group({"CPU": 2})},
        nodes=[HEAD, running("a", "s", {"CPU": 2}, {"CPU": 1}, idle_s=999)],
    )
    assert p["terminate"] == []


def test_idle_node_that_demand_needs_is_kept() -> None:
    p = plan(
        groups={"s": group({"CPU": 1})},
        nodes=[HEAD, running("a", "s", {"CPU": 1}, idle_s=999)],
        demand=tasks(({"CPU": 1}, 1)),
    )
    assert p["terminate"] == [] and p["launch"] == {}


def test_object_store_use_does_not_make_a_node_busy() -> None:
    p = plan(
        groups={"s": group({"CPU": 1, "object_store_memory": 100})},
        nodes=[HEAD, running("a", "s", {"CPU": 1, "object_store_memory": 100},
                             {"CPU": 1, "object_store_memory": 40}, idle_s=999)],
    )
    assert terminated(p) == {"a": "idle"}


# ------------------------------------------------------------- conservative


def test_conservative_caps_pending_at_running() -> None:
    nodes = [HEAD, *(running(f"r{k}", "s", {"CPU": 1}, {"CPU": 0}) for k in range(2))]
    p = plan(groups={"s": group({"CPU": 1})}, nodes=nodes, demand=tasks(({"CPU": 1}, 5)),
             options={"upscaling_mode": "Conservative"})
    assert p["launch"] == {"s": 2}
    assert p["capped"]["tasks"] == [{"resources": {"CPU": 1}, "count": 3}]


def test_conservative_allows_one_from_zero() -> None:
    p = plan(groups={"s": group({"CPU": 1})}, demand=tasks(({"CPU": 1}, 5)),
             options={"upscaling_mode": "Conservative"})
    assert p["launch"] == {"s": 1}


@pytest.mark.parametrize("mode", ["Default", "Aggressive"])
def test_default_and_aggressive_launch_everything_at_once(mode: str) -> None:
    p = plan(groups={"s": group({"CPU": 1})}, demand=tasks(({"CPU": 1}, 5)),
             options={"upscaling_mode": mode})
    assert p["launch"] == {"s": 5}


# --------------------------------------------------------------------- memory


def test_memory_target_scales_up() -> None:
    nodes = [HEAD, *(running(f"r{k}", "s", {"CPU": 1}, {"CPU": 0}, memory_used_fraction=0.9)
                     for k in range(2))]
    p = plan(groups={"s": group({"CPU": 1}, memory_target_fraction=0.5)}, nodes=nodes)
    # ceil(2 * 0.9 / 0.5) - 2 = 2
    assert p["launch"] == {"s": 2}
    assert p["why"] == {"s": ["memory"]}


def test_memory_within_tolerance_does_nothing() -> None:
    nodes = [HEAD, running("r", "s", {"CPU": 1}, {"CPU": 0}, memory_used_fraction=0.54)]
    p = plan(groups={"s": group({"CPU": 1}, memory_target_fraction=0.5)}, nodes=nodes)
    assert p["launch"] == {}


def test_memory_counts_pending_nodes() -> None:
    nodes = [HEAD, *(running(f"r{k}", "s", {"CPU": 1}, {"CPU": 0}, memory_used_fraction=0.9)
                     for k in range(2)), pending("p", "s")]
    p = plan(groups={"s": group({"CPU": 1}, memory_target_fraction=0.5)}, nodes=nodes)
    assert p["launch"] == {"s": 1}
    assert p["terminate"] == []


# ----------------------------------------------------------------- infeasible


def test_infeasible_demand_is_reported_and_launches_nothing() -> None:
    p = plan(groups={"s": group({"CPU": 2})}, demand=tasks(({"GPU": 1}, 2), ({"CPU": 4}, 1)))
    assert p["launch"] == {}
    assert {json.dumps(x, sort_keys=True) for x in p["infeasible"]["tasks"]} == {
        json.dumps({"resources": {"GPU": 1}, "count": 2}, sort_keys=True),
        json.dumps({"resources": {"CPU": 4}, "count": 1}, sort_keys=True),
    }


def test_head_capacity_counts_and_makes_demand_feasible() -> None:
    p = plan_json({
        "groups": {"s": group({"CPU": 1})},
        "nodes": [running("head", "head", {"CPU": 4, "special": 1})],
        "demand": tasks(({"special": 1}, 1)),
    })
    assert p["launch"] == {} and p["infeasible"]["tasks"] == []


# ------------------------------------------------------------------ contract


def test_output_has_every_documented_key() -> None:
    p = plan(groups={"s": group({"CPU": 1})})
    assert set(p) == {"launch", "why", "terminate", "infeasible", "capped"}
    for key in ("infeasible", "capped"):
        assert set(p[key]) == {"tasks", "gangs", "floor"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"nodes": [pending("x", "gpu")]}, "nodes[0].group: unknown group 'gpu'"),
        ({"groups": {"s": group({"CPU": 1}, min=3, max=2)}}, "groups.s.max: must be >= min"),
        ({"groups": {"s": group({"CPU": -1})}}, "groups.s.resources.CPU:"),
        ({"nodes": [{"id": "x", "group": "h", "status": "gone"}]}, "nodes[0].status:"),
        ({"demand": {"tasks": [{"resources": {"CPU": 1}, "count": "3"}]}},
         "demand.tasks[0].count:"),
        ({"demand": {"gangs": [{"strategy": "X", "bundles": [{"CPU": 1}]}]}},
         "demand.gangs[0].strategy:"),
        ({"demand": {"gangs": [{"strategy": "PACK", "bundles": []}]}},
         "demand.gangs[0].bundles:"),
        ({"options": {"upscaling_mode": "Fast"}}, "options.upscaling_mode:"),
        ({"nodes": [HEAD, HEAD]}, "nodes[1].id: duplicate node id 'head'"),
        ([], "$: expected a JSON object"),
    ],
)
def test_bad_documents_name_the_path(document: Any, message: str) -> None:
    with pytest.raises(PlanFormatError) as err:
        plan_json(document)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ValueError)


def test_cli_plan_prints_json_and_exits_2_on_bad_input(tmp_path: Any) -> None:
    good = tmp_path / "state.json"
    good.write_text(json.dumps({"groups": {"s": group({"CPU": 1})},
                                "demand": tasks(({"CPU": 1}, 2))}))
    cli = [sys.executable, "-m", "rayscale.cli.main", "plan"]
    out = subprocess.run([*cli, str(good)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["launch"] == {"s": 2}
    bad = subprocess.run([*cli, "-"], input='{"nodes": [{"id": "a", "group": "gpu", '
                         '"status": "pending"}]}', capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "nodes[0].group: unknown group 'gpu'"
    assert bad.stdout == ""
