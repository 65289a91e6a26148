"""The scaling event log: what the autoscaler launched or stopped, and why.

Append-only JSON lines, so `rayscale status` (another process) can read the
recent ones while the autoscaler writes, and a restarted autoscaler keeps the
history.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rayscale.paths import append_private

EventKind = Literal[
    "launch",
    "launch_failed",
    "registered",
    "drain",
    "drain_rejected",
    "stop",
    "lost",
    "adopt",
    "backoff",
    "infeasible",
    "capped",
    "error",
    "gcs_unreachable",
    "gcs_back",
    "start_hold",
    "hold_end",
    "head_restart",
    "provider_unreachable",
    "provider_back",
]


@dataclass(frozen=True)
class ScalingEvent:
    """One scaling decision or fact (a launch, a drain, a backoff), with its reason."""

    kind: EventKind
    message: str
    group: str | None = None
    node: str | None = None
    reason: str | None = None
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}  # all flat values


class EventLog:
    """Events in memory (the recent ones) and appended to a file (all of them)."""

    def __init__(
        self, path: Path | None, keep: int = 200, echo: Callable[[ScalingEvent], None] | None = None
    ) -> None:
        self.path = path
        self.echo = echo
        self.recent: deque[ScalingEvent] = deque(maxlen=keep)
        if path is not None and path.exists():
            for entry in read_events(path, keep):
                self.recent.append(ScalingEvent(**entry))

    def add(self, event: ScalingEvent) -> ScalingEvent:
        self.recent.append(event)
        if self.echo is not None:
            self.echo(event)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_private(self.path, json.dumps(event.to_dict()) + "\n")
        return event


def read_events(path: Path, last: int = 50) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines[-last:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    return out
