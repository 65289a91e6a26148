"""An independent checker for waste under *any reasonable* greedy packing.

plan-format.md's "frugal" property is checked by ``plancheck`` with one
packing: first-fit-decreasing by normalised size, in the documented node
order. A plan can pass it and still launch a node too many: with one node
fewer of a group, a different greedy packing (larger items first by CPU or
by memory, or best fit that keeps GPU and other scarce nodes for the demand
that needs them) may still place everything.

This module tries several such packings on "the plan, with one launch fewer
of a group". It shares no code with the planner: item by item, in plain
Python over floats, on ``plancheck``'s node list (the nodes after the plan,
in checking order).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tests import plancheck
from tests.plancheck import Slot

Shape = dict[str, float]
ItemKey = Callable[[Shape, dict[str, float]], tuple[float, ...]]
# Resources that few nodes have: best fit keeps nodes that have them for the
# demand that asks for them.
SCARCE = ("GPU", "custom", "fpga")


def _by_size(shape: Shape, scale: dict[str, float]) -> tuple[float, ...]:
    return (-plancheck._size(shape, scale),)


def _by_dominant(shape: Shape, scale: dict[str, float]) -> tuple[float, ...]:
    share = max((v / scale.get(k, 1.0) for k, v in shape.items()), default=0.0)
    return (-share, -plancheck._size(shape, scale))


def _by(resource: str) -> ItemKey:
    def key(shape: Shape, scale: dict[str, float]) -> tuple[float, ...]:
        return (-shape.get(resource, 0.0), -plancheck._size(shape, scale))

    return key


ITEM_ORDERS: dict[str, ItemKey] = {
    "size": _by_size,
    "dominant": _by_dominant,
    "cpu": _by("CPU"),
    "memory": _by("memory"),
}


def _first_fit(slots: list[Slot], cap: str, shape: Shape, skip: set[int]) -> int | None:
    for i, slot in enumerate(slots):
        if i not in skip and plancheck._fits(getattr(slot, cap), shape):
            return i
    return None


def _best_fit(
    slots: list[Slot], cap: str, shape: Shape, skip: set[int], scale: dict[str, float]
) -> int | None:
    """The fitting node that keeps scarce resources for others, then leaves least room."""
    best: tuple[tuple[float, ...], int] | None = None
    for i, slot in enumerate(slots):
        room = getattr(slot, cap)
        if i in skip or not plancheck._fits(room, shape):
            continue
        scarce_unused = sum(
            1 for r in SCARCE if room.get(r, 0.0) > 0 and shape.get(r, 0.0) <= 0
        )
        left = sum((room.get(k, 0.0) - shape.get(k, 0.0)) / scale.get(k, 1.0) for k in room)
        key = (float(scarce_unused), left, float(i))
        if best is None or key < best[0]:
            best = (key, i)
    return None if best is None else best[1]


def _pack(
    slots: list[Slot],
    state: dict[str, Any],
    plan: dict[str, Any],
    order: ItemKey,
    best_fit: bool,
) -> bool:
    """Place floor bundles (totals), gangs, then tasks (free) with one greedy packing."""
    scale = plancheck._scale(state)
    demand = state.get("demand", {})
    excluded = {k: plan["infeasible"][k] + plan["capped"][k] for k in ("tasks", "gangs", "floor")}

    def choose(cap: str, shape: Shape, skip: set[int]) -> int | None:
        if best_fit:
            return _best_fit(slots, cap, shape, skip, scale)
        return _first_fit(slots, cap, shape, skip)

    floor = plancheck._minus(demand.get("floor", []), excluded["floor"], "resources")
    for item in sorted(floor, key=lambda e: order(e["resources"], scale)):
        at = choose("total", item["resources"], set())
        if at is None:
            return False
        plancheck._take(slots[at].total, item["resources"])

    strategies = {"STRICT_PACK": 0, "STRICT_SPREAD": 1, "PACK": 2, "SPREAD": 3}

    def gang_key(gang: dict[str, Any]) -> tuple[float, ...]:
        total: Shape = {}
        for b in gang["bundles"]:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        return (strategies[gang["strategy"]], *order(total, scale))

    gangs = plancheck._minus(demand.get("gangs", []), excluded["gangs"], "bundles")
    for gang in sorted(gangs, key=gang_key):
        bundles = sorted(gang["bundles"], key=lambda b: order(b, scale))
        if gang["strategy"] == "STRICT_PACK":
            total: Shape = {}
            for b in bundles:
                for k, v in b.items():
                    total[k] = total.get(k, 0.0) + v
            bundles = [total]
        saved = [dict(s.free) for s in slots]
        taken: set[int] = set()
        for b in bundles:
            at = choose("free", b, taken if gang["strategy"] == "STRICT_SPREAD" else set())
            if at is None:
                for slot, free in zip(slots, saved, strict=True):
                    slot.free = free
                return False
            taken.add(at)
            plancheck._take(slots[at].free, b)

    tasks = plancheck._minus(demand.get("tasks", []), excluded["tasks"], "resources")
    for item in sorted(tasks, key=lambda e: order(e["resources"], scale)):
        at = choose("free", item["resources"], set())
        if at is None:
            return False
        plancheck._take(slots[at].free, item["resources"])
    return True


PACKINGS = [
    (f"{'best' if best else 'first'}-fit by {name}", key, best)
    for best in (False, True)
    for name, key in ITEM_ORDERS.items()
]


def packing_that_fits(
    state: dict[str, Any], plan: dict[str, Any], drop: str | None = None
) -> str | None:
    """The name of the first packing that places all demand (``drop``: one launch fewer)."""
    for name, key, best in PACKINGS:
        if _pack(plancheck.build_slots(state, plan, drop), state, plan, key, best):
            return name
    return None


def wasted(state: dict[str, Any], plan: dict[str, Any]) -> list[tuple[str, str]]:
    """Launched groups that could lose a node, with the packing that shows it.

    Launches that min or the memory target force are not waste.
    """
    gone = {t["id"] for t in plan["terminate"]}
    out = []
    for group, n in plan["launch"].items():
        spec = state["groups"][group]
        before = sum(
            1 for x in state["nodes"] if x["group"] == group and x["status"] != "terminating"
        )
        pending = sum(
            1 for x in state["nodes"]
            if x["group"] == group and x["status"] == "pending" and x["id"] not in gone
        )
        if before + n - 1 < spec["min"] or pending + n - 1 < plancheck.memory_need(state, group):
            continue
        name = packing_that_fits(state, plan, drop=group)
        if name is not None:
            out.append((group, name))
    return out


# ------------------------------------------------------- random states, seeded

RESOURCES = ("CPU", "GPU", "memory", "custom")
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
AMOUNTS = (0, 0.5, 1, 1, 2, 3, 4)


def _shape(rng: random.Random) -> Shape:
    names = rng.sample(RESOURCES, rng.randint(0, 3))
    shape = {r: rng.choice(AMOUNTS) for r in names}
    shape = {k: (int(v * 2) if k == "memory" else v) for k, v in shape.items()}
    shape = {k: v for k, v in shape.items() if v > 0}
    return shape or {"CPU": 1}


def random_state(rng: random.Random) -> dict[str, Any]:
    """A state drawn like test_planner_properties.states(), from a seeded stream."""
    groups: dict[str, Any] = {}
    for i in range(rng.randint(1, 3)):
        lo = rng.randint(0, 2)
        groups[f"g{i}"] = {
            "resources": _shape(rng),
            "min": lo,
            "max": rng.randint(lo, lo + 5),
            "priority": rng.randint(0, 2),
            "launchable": rng.random() < 0.75,
            "idle_timeout_s": rng.choice([None, 0, 30, 120]),
            "memory_target_fraction": rng.choice([None, None, 0.5, 0.8]),
        }
    nodes: list[dict[str, Any]] = [
        {"id": "head", "group": "head", "status": "running",
         "total": {"CPU": 1}, "available": {"CPU": rng.choice([0, 1])}, "idle_s": 0}
    ]
    for j in range(rng.randint(0, 6)):
        group = rng.choice(sorted(groups))
        status = rng.choice(["running", "running", "pending", "terminating"])
        node: dict[str, Any] = {"id": f"n{j}", "group": group, "status": status}
        if status == "running":
            total = groups[group]["resources"]
            frac = rng.choice([0, 0.5, 1])
            node["total"] = total
            node["available"] = {
                k: (int(v * frac) if k == "memory" else v * frac) for k, v in total.items()
            }
            node["idle_s"] = rng.choice([0, 10, 200]) if frac == 1 else 0
            if rng.random() < 0.5:
                node["memory_used_fraction"] = rng.choice([0.1, 0.6, 0.95])
        nodes.append(node)
    demand = {
        "tasks": [
            {"resources": _shape(rng), "count": rng.randint(1, 6)}
            for _ in range(rng.randint(0, 4))
        ],
        "gangs": [
            {
                "strategy": rng.choice(STRATEGIES),
                "bundles": [_shape(rng) for _ in range(rng.randint(1, 3))],
                "count": rng.randint(1, 2),
            }
            for _ in range(rng.randint(0, 2))
        ],
        "floor": [
            {"resources": _shape(rng), "count": rng.randint(1, 3)}
            for _ in range(rng.randint(0, 2))
        ],
    }
    options = {
        "upscaling_mode": rng.choice(["Default", "Conservative", "Aggressive"]),
        "idle_timeout_s": rng.choice([0, 60]),
        "max_nodes": rng.choice([None, *range(13)]) if rng.random() < 0.5 else None,
    }
    return {"groups": groups, "nodes": nodes, "demand": demand, "options": options}


def packing_state(rng: random.Random) -> dict[str, Any]:
    """A state that stresses packing: few groups, many copies, room to launch."""
    def shape(cap: bool) -> Shape:
        out = {
            "CPU": rng.choice([0, 0.5, 1, 2, 3, 4] if not cap else [2, 4, 8]),
            "memory": rng.choice([0, 1, 2, 3, 4] if not cap else [2, 4, 8]),
        }
        if rng.random() < (0.3 if cap else 0.15):
            out["GPU"] = rng.choice([1, 2])
        return {k: v for k, v in out.items() if v > 0} or {"CPU": 1}

    groups = {
        f"g{i}": {"resources": shape(True), "min": 0, "max": 60,
                  "priority": rng.choice([0, 0, 1])}
        for i in range(rng.randint(1, 3))
    }
    nodes: list[dict[str, Any]] = [
        {"id": "head", "group": "head", "status": "running",
         "total": {"CPU": 1}, "available": {"CPU": rng.choice([0, 1])}, "idle_s": 0}
    ]
    for j in range(rng.randint(0, 4)):
        group = rng.choice(sorted(groups))
        total = groups[group]["resources"]
        frac = rng.choice([0, 0.5, 1])
        nodes.append({"id": f"n{j}", "group": group, "status": "running", "total": total,
                      "available": {k: v * frac for k, v in total.items()},
                      "idle_s": rng.choice([0, 200]) if frac == 1 else 0})
    demand: dict[str, Any] = {
        "tasks": [{"resources": shape(False), "count": rng.randint(1, 12)}
                  for _ in range(rng.randint(1, 5))],
        "gangs": [
            {"strategy": rng.choice(STRATEGIES),
             "bundles": [shape(False) for _ in range(rng.randint(1, 3))],
             "count": rng.randint(1, 2)}
            for _ in range(rng.choice([0, 0, 1]))
        ],
        "floor": [],
    }
    return {"groups": groups, "nodes": nodes, "demand": demand}
