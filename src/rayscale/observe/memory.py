"""Physical memory use per Ray node, from Ray's own node stats (the dashboard API).

Ray's per-node ``mem`` figure is the whole machine's, which is the same for
every node when several share one machine (local mode). So a node's
``memory_used_fraction`` is the resident memory of the processes Ray runs for
that node (its workers and agents, as Ray's node stats list them) divided by
the node's logical ``memory`` resource: what the node was sized to hold.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


class DashboardMemoryProbe:
    """Callable: Ray node ids -> memory_used_fraction, refreshed at most every ``every_s``."""

    def __init__(
        self,
        dashboard_url: str,
        every_s: float = 2.0,
        timeout_s: float = 3.0,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.url = dashboard_url.rstrip("/")
        # Ray's token auth (rayauth.bearer_headers); a callable is asked per request
        # (a token file that is renewed: Kubernetes ServiceAccount tokens)
        self.headers = headers if callable(headers) else dict(headers or {})
        self.every_s = every_s
        self.timeout_s = timeout_s
        self._cache: dict[str, float] = {}
        self._at = 0.0

    def __call__(self, node_ids: list[str]) -> dict[str, float]:
        if time.monotonic() - self._at >= self.every_s:
            self._cache = self._measure(set(node_ids))
            self._at = time.monotonic()
        return {k: v for k, v in self._cache.items() if k in node_ids}

    def _get(self, path: str) -> Any:
        headers = self.headers() if callable(self.headers) else self.headers
        request = urllib.request.Request(self.url + path, headers=dict(headers))
        with _OPENER.open(request, timeout=self.timeout_s) as reply:
            return json.load(reply)

    def _measure(self, wanted: set[str]) -> dict[str, float]:
        out = {}
        summary = self._get("/nodes?view=summary")["data"]["summary"]
        for node in summary:
            raylet = node.get("raylet", {})
            node_id = raylet.get("nodeId")
            if node_id not in wanted or raylet.get("state") != "ALIVE":
                continue
            capacity = float(raylet.get("resourcesTotal", {}).get("memory", 0) or 0)
            if capacity <= 0:
                continue
            detail = self._get(f"/nodes/{node_id}")["data"]["detail"]
            rss = sum(int(w.get("memoryInfo", {}).get("rss", 0)) for w in detail.get("workers", []))
            out[node_id] = rss / capacity
        return out
