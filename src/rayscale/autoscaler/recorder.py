"""The autoscaler's side of the history: events and changing rounds into the HistoryStore.

Two hooks, so the loop itself does not change: :meth:`HistoryRecorder.on_event`
is the EventLog's ``echo`` and :meth:`HistoryRecorder.on_status` follows each
round's status document. A round that changed no count and no demand writes
nothing. The history must never stop scaling: a write that fails is logged
(once until writes work again) and dropped.

Each event also gets a ``detail`` from what its round saw, so a reader learns
why without the whole status: a launch's demand then ("5 pending 1-CPU
tasks"), a stop's idle time ("idle 62 s"). Launches, drains and stops are
written with their round's status, right after the round acted (the
snapshot that the decision was made from).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from rayscale.autoscaler.events import ScalingEvent
from rayscale.history.store import HistoryError, HistoryStore, counts_of, demand_of

log = logging.getLogger("rayscale.autoscaler")
DECIDED_IN_ROUND = frozenset({"launch", "drain", "stop"})
WRITE_WAIT_S = 1.0


class HistoryRecorder:
    def __init__(self, store: HistoryStore, uid: str, name: str, mode: str, created: float,
                 dashboard_url: str | None = None) -> None:
        self.store = store
        self.uid = uid
        store.record_cluster(uid, name, mode, created, dashboard_url)
        self._status: dict[str, Any] = {}
        self._held: list[ScalingEvent] = []  # until their round's status
        self._failing = False

    @classmethod
    def open(cls, uid: str, name: str, mode: str, created: float,
             dashboard_url: str | None = None) -> HistoryRecorder | None:
        """A recorder on the default history file; None (and a warning) if unusable."""
        try:
            # a round waits at most this long for another writer (a prune, `down`),
            # then drops that write: the history never holds up scaling
            return cls(HistoryStore(busy_timeout_s=WRITE_WAIT_S), uid, name, mode, created,
                       dashboard_url)
        except (HistoryError, sqlite3.Error, OSError) as exc:
            log.warning("no history for this cluster: %s", exc)
            return None

    def on_status(self, status: dict[str, Any]) -> None:
        self._status = status
        self._write(lambda: self.store.record_round(
            self.uid, float(status.get("updated_at") or time.time()),
            counts_of(status), demand_of(status)))
        held, self._held = self._held, []
        if self._failing:
            # the round's own write failed (another writer holds the file, or it is
            # broken): its events are dropped with it rather than waited on one by one
            # (events.jsonl has them)
            return
        for event in held:
            self._record(event)

    def on_event(self, event: ScalingEvent) -> None:
        if event.kind in DECIDED_IN_ROUND:
            # decided by this round (a launch for the demand it saw first, a stop of a
            # node it found idle): the detail comes from the status the round publishes
            # right after it acts, built from the same picture as the decision
            self._held.append(event)
        else:
            self._record(event)

    def _record(self, event: ScalingEvent) -> None:
        detail = self.detail(event)
        self._write(lambda: self.store.record_event(self.uid, event.to_dict(), detail))

    def detail(self, event: ScalingEvent) -> str | None:
        """What the last round knew about this event's cause."""
        if event.kind == "launch":
            parts = demand_words(self._status.get("demand") or {})
            return "demand: " + ", ".join(parts) if parts else None
        if event.kind in ("stop", "drain") and event.node:
            for node in self._status.get("nodes") or []:
                if node.get("id") == event.node and node.get("idle_s"):
                    return f"idle {float(node['idle_s']):.0f} s"
        return None

    def _write(self, write: Any) -> None:
        try:
            write()
        except (HistoryError, sqlite3.Error, OSError) as exc:
            if not self._failing:
                log.warning("writing the history failed (scaling goes on): %s", exc)
            self._failing = True
        else:
            self._failing = False


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def shape_words(resources: dict[str, Any]) -> str:
    """``{"CPU": 1, "GPU": 1}`` -> ``1-CPU 1-GPU``; memory in GiB."""
    words = []
    for name, value in resources.items():
        if name in ("memory", "object_store_memory"):
            words.append(f"{float(value) / 2**30:g}GiB-{name}")
        else:
            words.append(f"{value:g}-{name}" if isinstance(value, float) else f"{value}-{name}")
    return " ".join(words)


def demand_words(demand: dict[str, Any], shapes: int = 3) -> list[str]:
    """The status document's pending demand in words: "5 pending 1-CPU tasks"."""
    tasks = sorted(demand.get("tasks") or [], key=lambda e: -int(e.get("count", 1)))
    parts = [_plural(int(e.get("count", 1)),
                     f"pending {shape_words(e.get('resources') or {})} task".replace("  ", " "))
             for e in tasks[:shapes]]
    if len(tasks) > shapes:
        rest = sum(int(e.get("count", 1)) for e in tasks[shapes:])
        parts.append(_plural(rest, "more pending task"))
    gangs = demand.get("gangs") or []
    if gangs:
        parts.append(_plural(sum(int(g.get("count", 1)) for g in gangs), "placement group")
                     + " pending")
    floor = sum(int(e.get("count", 1)) for e in demand.get("floor") or [])
    if floor:
        parts.append(_plural(floor, "requested bundle"))
    return parts

