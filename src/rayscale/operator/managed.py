"""``spec.managedBy``: objects another controller (MultiKueue) manages are left alone."""

from __future__ import annotations

import logging
from typing import Any

from rayscale.api.base import managed_elsewhere

log = logging.getLogger(__name__)


def left_to_another(body: dict[str, Any], kind: str, said: dict[str, set[str]]) -> bool:
    """Whether ``body`` is another controller's, as KubeRay decides it (said once per
    object and manager in the log; ``said`` keeps what was said, by ``namespace/name``)."""
    manager = managed_elsewhere((body.get("spec") or {}).get("managedBy"))
    if manager is None:
        return False
    meta = body["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    if manager not in said.setdefault(key, set()):
        said[key].add(manager)
        log.info("skipping %s %s: managed by %s", kind, key, manager)
    return True
