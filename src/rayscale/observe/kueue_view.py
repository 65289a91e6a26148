"""Which queue a RayJob or RayCluster waits in, and why: from Kueue's Workloads.

Kueue admits a queued object (one labelled ``kueue.x-k8s.io/queue-name``)
through a Workload it owns; the Workload's conditions say where it stands:

- ``pending``: no quota reserved yet (``QuotaReserved`` False or absent); the
  reason is Kueue's own message ("couldn't assign flavors to pod set head:
  insufficient unused quota for cpu in flavor default-flavor, 2 more needed");
- ``inadmissible``: Kueue cannot consider it (no such LocalQueue, a stopped
  ClusterQueue): ``QuotaReserved`` False with reason ``Inadmissible``;
- ``admitted``: ``Admitted`` True, with the ClusterQueue and flavors it got;
- ``preempted`` / ``evicted``: ``Evicted`` True (reason ``Preempted`` or
  another): suspended again, waiting to be admitted anew;
- ``finished``: ``Finished`` True.

A queued object without a Workload yet is ``no workload`` (Kueue has not seen
it: not running, or not watching that kind). Pure functions of the objects as
the API returns them; the CLI reads them (cli/queue_cmd.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
ORIGIN_LABEL = "ray.io/originated-from-crd"
Obj = dict[str, Any]


@dataclass(frozen=True)
class QueuedView:
    kind: str
    namespace: str
    name: str
    queue: str
    state: str  # pending, inadmissible, admitted, preempted, evicted, finished, no workload
    why: str
    cluster_queue: str | None = None
    priority: str | None = None
    running: str | None = None  # the object's own status (jobDeploymentStatus, state)


def _conditions(workload: Obj) -> dict[str, Obj]:
    return {str(c.get("type")): c for c in (workload.get("status") or {}).get("conditions") or []}


def _true(conds: dict[str, Obj], kind: str) -> Obj | None:
    cond = conds.get(kind)
    return cond if cond is not None and cond.get("status") == "True" else None


def workload_state(workload: Obj | None) -> tuple[str, str, str | None]:
    """(state, why, ClusterQueue) of a Workload (None: none yet)."""
    if workload is None:
        return "no workload", "Kueue has not made a Workload for it (is Kueue running?)", None
    conds = _conditions(workload)
    admission = (workload.get("status") or {}).get("admission") or {}
    cluster_queue = admission.get("clusterQueue")
    if (done := _true(conds, "Finished")) is not None:
        return "finished", str(done.get("message") or done.get("reason") or ""), cluster_queue
    if (evicted := _true(conds, "Evicted")) is not None:
        state = "preempted" if evicted.get("reason") == "Preempted" else "evicted"
        return state, str(evicted.get("message") or evicted.get("reason") or ""), cluster_queue
    if _true(conds, "Admitted") is not None:
        flavors = sorted({str(f) for ps in admission.get("podSetAssignments") or []
                          for f in (ps.get("flavors") or {}).values()})
        return "admitted", f"flavors {', '.join(flavors) or '-'}", cluster_queue
    reserved = conds.get("QuotaReserved")
    if reserved is not None and reserved.get("reason") == "Inadmissible":
        return "inadmissible", str(reserved.get("message") or ""), cluster_queue
    why = str((reserved or {}).get("message") or "waiting for quota in its ClusterQueue")
    return "pending", why, cluster_queue


def queued(objects: list[tuple[str, Obj]], workloads: list[Obj]) -> list[QueuedView]:
    """The queued objects (``(kind, object)``) with the state of their Workloads."""
    by_owner: dict[str, Obj] = {}
    for owned in workloads:
        for ref in (owned.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("uid"):
                by_owner[str(ref["uid"])] = owned
    out = []
    for kind, obj in objects:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        queue = labels.get(QUEUE_LABEL)
        if not queue or (kind == "RayCluster" and labels.get(ORIGIN_LABEL) == "RayJob"):
            continue  # a RayJob's own cluster carries its labels; Kueue admits the RayJob
        workload: Obj | None = by_owner.get(str(meta.get("uid")))
        state, why, cluster_queue = workload_state(workload)
        status = obj.get("status") or {}
        running = status.get("jobDeploymentStatus") if kind == "RayJob" else status.get("state")
        priority = labels.get(PRIORITY_LABEL) or ((workload or {}).get("spec") or {}).get(
            "priorityClassName")
        out.append(QueuedView(kind, str(meta.get("namespace")), str(meta.get("name")),
                              str(queue), state, why, cluster_queue,
                              str(priority) if priority else None,
                              str(running) if running else None))
    return sorted(out, key=lambda v: (v.namespace, v.queue, v.kind, v.name))
