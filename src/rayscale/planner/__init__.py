"""The planner: a pure function from a ClusterState document to a Plan document.

It does no I/O and imports nothing from the rest of rayscale (everything with
I/O depends on the planner, never the other way round). The JSON contract is
docs/plan-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rayscale.planner.core import plan
from rayscale.planner.plan import Plan, Termination
from rayscale.planner.state import ClusterState, PlanFormatError, parse_state

__all__ = [
    "ClusterState",
    "Plan",
    "PlanFormatError",
    "Termination",
    "parse_state",
    "plan",
    "plan_json",
]


def plan_json(state: Mapping[str, Any]) -> dict[str, Any]:
    """Plan for a ClusterState document; raises PlanFormatError (a ValueError) naming the path."""
    return plan(parse_state(state)).to_dict()
