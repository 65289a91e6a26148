"""Pacing container starts across the whole machine.

A vnode stands for nodes that each have their own CPUs; here every pod of
every virtual node shares this machine's few cores. Starting a dozen Ray
containers at once starves them all: Ray 2.60's raylet waits a hard-coded
15 s (``WaitForPersistedPort`` in ``NodeManager::WaitForDashboardAgentPorts``,
not a RayConfig setting) for its dashboard agent's port files, and on 2 cores
with 9-15 agents starting together the agents took 24-26 s, so the raylets
aborted. With 3-7 starts at a time they took 5-16 s and lived.

So the vnode admits at most ``limit`` container starts per ``window_s``
seconds; the rest stay ``ContainerCreating`` until their turn, as on a real
node whose kubelet is busy. Restarts and init containers are paced the same.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field


@dataclass
class StartPacer:
    limit: int
    window_s: float
    _recent: deque[float] = field(default_factory=deque)

    @classmethod
    def for_this_machine(cls) -> StartPacer:
        """Two starts per core every 8 s (measured: 2 cores, Ray 2.60)."""
        return cls(limit=2 * (os.cpu_count() or 1), window_s=8.0)

    def admit(self, now: float) -> bool:
        """Whether a container may start at ``now`` (monotonic seconds); counts it if so."""
        while self._recent and now - self._recent[0] >= self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.limit:
            return False
        self._recent.append(now)
        return True
