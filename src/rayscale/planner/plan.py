"""The Plan document (plan-format.md) as a typed value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TerminationReason = Literal["idle", "over_max", "unneeded_pending"]
REASON_ORDER = ("min", "floor", "gangs", "tasks", "memory")


def _unplaced() -> dict[str, list[dict[str, Any]]]:
    return {"tasks": [], "gangs": [], "floor": []}


@dataclass(frozen=True)
class Termination:
    id: str
    reason: TerminationReason


@dataclass
class Plan:
    launch: dict[str, int] = field(default_factory=dict)
    why: dict[str, list[str]] = field(default_factory=dict)
    terminate: list[Termination] = field(default_factory=list)
    infeasible: dict[str, list[dict[str, Any]]] = field(default_factory=_unplaced)
    capped: dict[str, list[dict[str, Any]]] = field(default_factory=_unplaced)

    def to_dict(self) -> dict[str, Any]:
        return {
            "launch": dict(self.launch),
            "why": {g: list(r) for g, r in self.why.items()},
            "terminate": [{"id": t.id, "reason": t.reason} for t in self.terminate],
            "infeasible": {k: list(v) for k, v in self.infeasible.items()},
            "capped": {k: list(v) for k, v in self.capped.items()},
        }

    @property
    def empty(self) -> bool:
        return not self.launch and not self.terminate
