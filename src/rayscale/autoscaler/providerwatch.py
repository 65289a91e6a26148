"""Whether the node provider (the Kubernetes API server, locally the process table) answers.

The provider is the autoscaler's record of what it launched. When it cannot
be read (an API server that times out, refuses, or answers 5xx), the
autoscaler does not know which nodes exist or which launches are in flight,
so a round launches nothing and stops nothing: acting on the last picture
could launch a node twice or stop one that now runs work. (Ray's own
autoscaler once treated a timed-out list as "no nodes" and terminated every
node: ray#58933.) Unlike the GCS after an outage, an API server that answers
again answers with the whole truth, so scaling resumes at once.

Pure logic: no I/O, no clock; callers pass ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ProviderChange:
    """What one round changed, for the event log."""

    kind: Literal["provider_unreachable", "provider_back"]
    message: str


class ProviderWatch:
    """The provider's reachability over rounds: each outage is announced once."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, now: float, why: str) -> ProviderChange | None:
        """A round could not read the provider (``why``: the error, without secrets)."""
        if self.down_since is not None:
            return None
        self.down_since = now
        self.outages += 1
        return ProviderChange(
            "provider_unreachable", f"the node provider cannot be read ({why}); stopping "
            "nothing and launching nothing until it answers")

    def answered(self, now: float) -> ProviderChange | None:
        """A round read the provider."""
        if self.down_since is None:
            return None
        took = now - self.down_since
        self.down_since = None
        return ProviderChange("provider_back", f"the node provider answers again after "
                              f"{took:.1f}s: scaling resumes")
