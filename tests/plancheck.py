"""An independent, deliberately naive checker for plan-format.md's four properties.

It shares no code with the planner: item-by-item first-fit-decreasing in plain
Python over floats. The node order is the one docs/planner.md documents for
checking: running nodes (fixed and busy ones fullest first, then idle ones),
pending nodes, then launched nodes in blocks by group (priority high to low,
then name). Items: floor bundles on total capacity, gangs, then tasks on free
capacity, each sorted decreasing by normalised size, those with label selectors
first. An item with a label selector only goes to a node whose labels match it
(or one of its fallbacks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

EPS = 1e-6


@dataclass
class Slot:
    group: str
    free: dict[str, float]
    total: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)


def _fits(cap: dict[str, float], shape: dict[str, float]) -> bool:
    return all(cap.get(k, 0.0) + EPS >= v for k, v in shape.items() if v > 0)


def _condition(labels: dict[str, str], key: str, text: str) -> bool:
    negated = text.startswith("!")
    body = text[1:] if negated else text
    values = {v.strip() for v in body[3:-1].split(",")} if body.startswith("in(") else {body}
    return (key in labels and labels[key] in values) != negated


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(_condition(labels, k, v) for k, v in selector.items())


def _selectors(item: dict[str, Any]) -> list[dict[str, str]]:
    """An item's alternatives ([] when it may use any node)."""
    first = item.get("label_selector") or {}
    if not first:
        return []
    return [first, *(f.get("label_selector") or {} for f in item.get("fallback_strategy", []))]


def _allowed(slot: Slot, selectors: list[dict[str, str]]) -> bool:
    return not selectors or any(_matches(slot.labels, s) for s in selectors)


def _take(cap: dict[str, float], shape: dict[str, float]) -> None:
    for k, v in shape.items():
        cap[k] = cap.get(k, 0.0) - v


def _scale(state: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    maps = [g["resources"] for g in state["groups"].values()]
    maps += [n["total"] for n in state.get("nodes", []) if n.get("total")]
    for m in maps:
        for k, v in m.items():
            out[k] = max(out.get(k, 0.0), float(v))
    return {k: (v if v > 0 else 1.0) for k, v in out.items()}


def _size(shape: dict[str, float], scale: dict[str, float]) -> float:
    return sum(v / scale.get(k, 1.0) for k, v in shape.items())


def _idle(node: dict[str, Any], state: dict[str, Any]) -> bool:
    if not node.get("idle_s"):
        return False
    total = node.get("total") or state["groups"][node["group"]]["resources"]
    avail = node.get("available")
    if avail is None:
        return True
    return all(
        avail.get(k, 0.0) + EPS >= v for k, v in total.items() if k != "object_store_memory"
    )


def build_slots(
    state: dict[str, Any], plan: dict[str, Any], drop: str | None = None
) -> list[Slot]:
    """The nodes after the plan, in checking order (``drop``: one launch fewer of it)."""
    groups = state["groups"]
    gone = {t["id"] for t in plan["terminate"]}
    scale = _scale(state)
    opts = state.get("options", {})
    busy: list[tuple[float, str, Slot]] = []
    idle: list[tuple[float, str, Slot]] = []
    pending: list[tuple[str, Slot]] = []
    for node in state.get("nodes", []):
        if node["status"] == "terminating" or node["id"] in gone:
            continue
        group = node["group"]
        labels = node.get("labels")
        if labels is None:
            labels = groups[group].get("labels", {}) if group in groups else {}
        if node["status"] == "pending":
            cap = dict(groups[group]["resources"])
            pending.append((node["id"], Slot(group, dict(cap), dict(cap), labels)))
            continue
        default = groups[group]["resources"] if group in groups else {}
        total = dict(node.get("total") or default)
        free = dict(node["available"]) if node.get("available") is not None else dict(total)
        slot = Slot(group, free, total, labels)
        timeout = None
        if group in groups:
            timeout = groups[group].get("idle_timeout_s")
            if timeout is None:
                timeout = opts.get("idle_timeout_s", 60)
        if timeout is not None and _idle(node, state) and node["idle_s"] >= timeout:
            idle.append((node["idle_s"], node["id"], slot))
        else:
            busy.append((_size(free, scale), node["id"], slot))
    slots = [s for *_, s in sorted(busy, key=lambda r: (r[0], r[1]))]
    slots += [s for *_, s in sorted(idle, key=lambda r: (r[0], r[1]))]
    slots += [s for _, s in sorted(pending, key=lambda r: r[0])]
    launch = dict(plan["launch"])
    if drop is not None:
        launch[drop] -= 1
    for g in sorted(launch, key=lambda g: (-groups[g].get("priority", 0), g)):
        cap = groups[g]["resources"]
        labels = groups[g].get("labels", {})
        slots += [Slot(g, dict(cap), dict(cap), labels) for _ in range(launch[g])]
    return slots


def _minus(entries: list[dict[str, Any]], left: list[dict[str, Any]], key: str) -> list[Any]:
    """Expand demand entries, less the copies the plan reported (capped/infeasible)."""
    out: list[Any] = []
    remaining = [dict(e) for e in left]
    for e in entries:
        n = e.get("count", 1)
        for r in remaining:
            if r[key] == e[key] and r.get("strategy") == e.get("strategy") and r["count"] > 0 \
                    and _selector_fields(r) == _selector_fields(e):
                cut = min(n, r["count"])
                n -= cut
                r["count"] -= cut
        out += [e] * n
    return out


def _selector_fields(entry: dict[str, Any]) -> tuple[Any, ...]:
    bundles = entry.get("bundle_label_selector") or []
    # [{}, ...] selects nothing, as no selector does (the planner keys them together)
    return (entry.get("label_selector") or {}, entry.get("fallback_strategy") or [],
            bundles if any(bundles) else [])


def sufficient(state: dict[str, Any], plan: dict[str, Any], drop: str | None = None) -> bool:
    slots = build_slots(state, plan, drop)
    scale = _scale(state)
    demand = state.get("demand", {})
    excluded = {k: plan["infeasible"][k] + plan["capped"][k] for k in ("tasks", "gangs", "floor")}
    floor = _minus(demand.get("floor", []), excluded["floor"], "resources")
    for item in sorted(floor, key=lambda e: (not _selectors(e), -_size(e["resources"], scale))):
        slot = next((s for s in slots if _fits(s.total, item["resources"])
                     and _allowed(s, _selectors(item))), None)
        if slot is None:
            return False
        _take(slot.total, item["resources"])
    gangs = _minus(demand.get("gangs", []), excluded["gangs"], "bundles")
    order = {"STRICT_PACK": 0, "STRICT_SPREAD": 1, "PACK": 2, "SPREAD": 3}

    def gang_size(g: dict[str, Any]) -> float:
        return sum(_size(b, scale) for b in g["bundles"])

    def unlabelled(g: dict[str, Any]) -> bool:
        return not any(g.get("bundle_label_selector") or [])

    for gang in sorted(gangs, key=lambda g: (order[g["strategy"]], unlabelled(g), -gang_size(g))):
        if not _place_gang(slots, gang, scale):
            return False
    tasks = _minus(demand.get("tasks", []), excluded["tasks"], "resources")
    for item in sorted(tasks, key=lambda e: (not _selectors(e), -_size(e["resources"], scale))):
        slot = next((s for s in slots if _fits(s.free, item["resources"])
                     and _allowed(s, _selectors(item))), None)
        if slot is None:
            return False
        _take(slot.free, item["resources"])
    return True


def _place_gang(slots: list[Slot], gang: dict[str, Any], scale: dict[str, float]) -> bool:
    chosen = gang.get("bundle_label_selector") or [{}] * len(gang["bundles"])
    pairs = sorted(zip(gang["bundles"], chosen, strict=True), key=lambda p: -_size(p[0], scale))
    # each piece: its resources and the selectors a node must match (all of them)
    pieces: list[tuple[dict[str, float], list[dict[str, str]]]] = [
        (b, [sel] if sel else []) for b, sel in pairs
    ]
    if gang["strategy"] == "STRICT_PACK":
        total: dict[str, float] = {}
        for b, _ in pairs:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        pieces = [(total, [sel for _, sel in pairs if sel])]
    saved = [dict(s.free) for s in slots]
    used: set[int] = set()
    for b, needs in pieces:
        idx = next(
            (
                i
                for i, s in enumerate(slots)
                if _fits(s.free, b) and all(_matches(s.labels, n) for n in needs)
                and not (gang["strategy"] == "STRICT_SPREAD" and i in used)
            ),
            None,
        )
        if idx is None:
            for s, f in zip(slots, saved, strict=True):
                s.free = f
            return False
        used.add(idx)
        _take(slots[idx].free, b)
    return True


def counts_after(state: dict[str, Any], plan: dict[str, Any]) -> dict[str, int]:
    gone = {t["id"] for t in plan["terminate"]}
    out = dict.fromkeys(state["groups"], 0)
    for n in state.get("nodes", []):
        if n["group"] in out and n["status"] != "terminating" and n["id"] not in gone:
            out[n["group"]] += 1
    for g, k in plan["launch"].items():
        out[g] += k
    return out


def memory_need(state: dict[str, Any], group: str) -> int:
    spec = state["groups"][group]
    target = spec.get("memory_target_fraction")
    if target is None:
        return 0
    running = [
        n for n in state.get("nodes", []) if n["group"] == group and n["status"] == "running"
    ]
    fr = [n["memory_used_fraction"] for n in running if n.get("memory_used_fraction") is not None]
    if not fr:
        return 0
    mean = sum(fr) / len(fr)
    if mean <= target * 1.1:
        return 0
    return max(0, math.ceil(len(running) * mean / target - 1e-9) - len(running))
