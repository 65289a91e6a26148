"""The one shape of a Kubernetes Event the operator's controllers post about their objects."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

#: Longest message kept in an Event (the API server's own limit is larger; a wall of
#: text helps nobody in `kubectl describe`).
MAX_MESSAGE = 1024


def reporting_instance() -> str:
    """This operator process's name in Events (the pod's, in a cluster)."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def event_manifest(
    body: dict[str, Any], kind: str, event_type: str, reason: str, message: str, component: str,
) -> dict[str, Any]:
    """A ``v1`` Event about ``body`` (a ``ray.io/v1`` object of ``kind``)."""
    meta = body["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "type": event_type, "reason": reason, "message": message[:MAX_MESSAGE],
        "action": reason,
        "involvedObject": {"apiVersion": "ray.io/v1", "kind": kind, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": reporting_instance(),
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
