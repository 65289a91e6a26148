"""Whether the autoscaler may act on what it sees: the head's GCS gone, back, settling.

The autoscaler only acts on a picture of the cluster it can trust. While the
GCS cannot be reached there is no picture (a round stops nothing and launches
nothing). When it answers again after an outage (a restarted head, with GCS
fault tolerance), its first pictures are incomplete: workers re-register one
by one, so a node that runs and is ours may look unregistered (a "pending"
launch long timed out) and demand may look unserved; or the GCS shows the
nodes it read back from its store as alive before they report (their load
unknown). For ``settle_s`` at least, and then until every live node of ours
is registered again, at most ``grace_s`` in all, the autoscaler *holds*: no
launch, no stop, no launch timeout. (Ray's own autoscaler once
terminated every node when a list call timed out: ray#58933.)

Pure logic: no I/O, no clock; callers pass ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HeadState = Literal["up", "down", "recovering"]


@dataclass(frozen=True)
class Change:
    """What one round changed, for the event log (None: nothing to say)."""

    kind: Literal["gcs_unreachable", "gcs_back", "start_hold", "hold_end"]
    message: str


class HeadWatch:
    """The GCS's reachability over rounds, and the hold after an outage."""

    def __init__(self, grace_s: float, settle_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self.settle_s = min(settle_s, grace_s)
        self.state: HeadState = "up"
        self.since: float | None = None  # when the current down/recovering state began
        self.down_for: float = 0.0  # how long the last outage lasted
        self.outages = 0
        self.starting_up = False  # the hold is the start's (starting), not an outage's

    @property
    def holding(self) -> bool:
        """No scaling decision is acted on (down, or recovering from an outage)."""
        return self.state != "up"

    def unreachable(self, now: float, why: str) -> Change | None:
        """A round could not observe the GCS."""
        if self.state == "down":
            return None
        self.starting_up = False
        self.state, self.since = "down", now
        self.outages += 1
        return Change("gcs_unreachable", f"the head's GCS cannot be reached ({why}); "
                      "stopping nothing and launching nothing until it is back")

    def starting(self, now: float, unregistered: int) -> Change:
        """The first round found live nodes of ours that Ray does not show registered.

        An autoscaler that starts has no history: with a head that was just
        replaced (its sidecar starts with it) the GCS's first picture is the
        one after an outage, so it holds the same way.
        """
        self.state, self.since = "recovering", now
        # no minimum: a GCS that read its nodes back shows them registered at once (no
        # hold at all), and a new cluster's first workers should not wait for a settle
        self.starting_up = True
        return Change("start_hold", f"{unregistered} running node(s) of ours are not "
                      "registered with Ray yet (a restarted head?): holding (no stop, no "
                      f"launch) until they are, at most {self.grace_s:.0f}s")

    def reachable(self, now: float, unregistered: int) -> Change | None:
        """A round observed the GCS; ``unregistered``: live nodes of ours that Ray
        does not show as registered (yet)."""
        if self.state == "up":
            return None
        if self.state == "down":
            assert self.since is not None
            self.down_for = now - self.since
            self.state, self.since = "recovering", now
            waiting = f"{unregistered} live node(s) to re-register" if unregistered \
                else "the nodes to report"
            return Change("gcs_back", f"the head's GCS is back after {self.down_for:.1f}s; "
                          f"holding (no stop, no launch) for {waiting}: at least "
                          f"{self.settle_s:.0f}s, at most {self.grace_s:.0f}s")
        assert self.since is not None
        waited = now - self.since
        settle = 0.0 if self.starting_up else self.settle_s
        if unregistered == 0 and waited >= settle:
            self.starting_up = False
            self.state, self.since = "up", None
            return Change("hold_end", f"every live node is registered {waited:.1f}s after the "
                          "GCS came back: scaling resumes")
        if waited >= self.grace_s:
            self.starting_up = False
            self.state, self.since = "up", None
            return Change("hold_end", f"{unregistered} node(s) did not re-register within "
                          f"{self.grace_s:.0f}s of the GCS coming back: scaling resumes")
        return None
