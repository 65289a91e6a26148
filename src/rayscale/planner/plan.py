"""The Plan document (plan-format.md) as a typed value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rayscale.planner.state import Gang, Shape

TerminationReason = Literal["idle", "over_max", "unneeded_pending"]
REASON_ORDER = ("min", "floor", "gangs", "tasks", "memory")


@dataclass(frozen=True)
class Termination:
    id: str
    reason: TerminationReason


@dataclass
class Unplaced:
    """Demand a plan leaves unplaced, by kind; each count is what is left over."""

    tasks: list[Shape] = field(default_factory=list)
    gangs: list[Gang] = field(default_factory=list)
    floor: list[Shape] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many of each kind are left: {"tasks": n, "gangs": n, "floor": n}."""
        return {
            "tasks": sum(s.count for s in self.tasks),
            "gangs": sum(g.count for g in self.gangs),
            "floor": sum(s.count for s in self.floor),
        }

    @property
    def empty(self) -> bool:
        return not (self.tasks or self.gangs or self.floor)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "tasks": [_shape(s) for s in self.tasks],
            "gangs": [_gang(g) for g in self.gangs],
            "floor": [_shape(s) for s in self.floor],
        }


@dataclass
class Plan:
    launch: dict[str, int] = field(default_factory=dict)
    why: dict[str, list[str]] = field(default_factory=dict)
    terminate: list[Termination] = field(default_factory=list)
    infeasible: Unplaced = field(default_factory=Unplaced)
    capped: Unplaced = field(default_factory=Unplaced)
    #: with capped demand: each group that could hold some of it, and the limit that
    #: keeps it from launching more (``max``, ``max_nodes``, ``conservative``,
    #: ``backoff``, ``quota:<name>``)
    limited: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "launch": dict(self.launch),
            "why": {g: list(r) for g, r in self.why.items()},
            "terminate": [{"id": t.id, "reason": t.reason} for t in self.terminate],
            "infeasible": self.infeasible.to_dict(),
            "capped": self.capped.to_dict(),
        }
        if self.limited:
            out["limited"] = dict(self.limited)
        return out

    @property
    def empty(self) -> bool:
        return not self.launch and not self.terminate


def _shape(shape: Shape) -> dict[str, Any]:
    out: dict[str, Any] = {"resources": echo(shape.resources), "count": shape.count}
    if shape.label_selector:
        out["label_selector"] = dict(shape.label_selector)
    if shape.fallback_strategy:
        out["fallback_strategy"] = [
            {"label_selector": dict(f.label_selector)} for f in shape.fallback_strategy
        ]
    return out


def _gang(gang: Gang) -> dict[str, Any]:
    out: dict[str, Any] = {
        "strategy": gang.strategy, "bundles": [echo(b) for b in gang.bundles], "count": gang.count
    }
    if gang.bundle_label_selector:
        out["bundle_label_selector"] = [dict(s) for s in gang.bundle_label_selector]
    return out


def echo(resources: Mapping[str, float]) -> dict[str, float]:
    """A shape as the input wrote it: whole numbers stay whole (1, not 1.0)."""
    return {k: int(v) if float(v).is_integer() else v for k, v in resources.items()}
