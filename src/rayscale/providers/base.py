"""The one small interface between the autoscaler loop and where nodes run.

Draining is not the provider's job: the loop drains a node through Ray's GCS
first (the same for every provider) and only then asks the provider to stop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from rayscale.planner.state import Quota

ProviderState = Literal["launching", "started", "stopping", "dead"]


@dataclass(frozen=True)
class ProviderNode:
    """A worker node as the provider sees it (the Ray view is joined by ``id``)."""

    id: str
    group: str
    state: ProviderState
    launched_at: float
    ip: str | None = None
    pid: int | None = None
    #: why a ``dead`` node that never ran ended, when the provider knows (a refused pod)
    reason: str | None = None


class NodeProvider(Protocol):
    def launch(self, group: str, count: int) -> list[str]:
        """Start ``count`` nodes of ``group``; return their ids at once (no waiting)."""
        ...

    def terminate(self, node_id: str) -> None:
        """Stop a node (already drained in Ray, or never registered)."""
        ...

    def nodes(self) -> list[ProviderNode]:
        """Every node this provider started and has not yet forgotten."""
        ...

    def forget(self, node_id: str) -> None:
        """Drop a dead node's bookkeeping."""
        ...


@runtime_checkable
class RegistrationListener(Protocol):
    """A provider that wants to know when Ray registered one of its nodes (the local
    provider: a paced start slot is free then, before `ray start` says so)."""

    def registered(self, node_id: str) -> None: ...


@dataclass(frozen=True)
class QuotaView:
    """What the planner's quotas say (plan-format.md, "Quotas"): what is left under each
    quota, and what one node of each group takes (empty: no quota applies)."""

    quotas: list[Quota] = field(default_factory=list)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)


@runtime_checkable
class QuotaSource(Protocol):
    """A provider whose nodes are under quotas (Kubernetes: ResourceQuota). Read each
    round after :meth:`NodeProvider.nodes`; an error holds the round like one of those."""

    def quotas(self) -> QuotaView: ...
