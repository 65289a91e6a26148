"""What Kueue will still admit for an elastic RayCluster, as one planner quota.

An autoscaling RayCluster under Kueue is an *elastic job* (Kueue's alpha feature
gate ``ElasticJobsViaWorkloadSlices``, and the annotation
``kueue.x-k8s.io/elastic-job: "true"``). Raising a group's ``replicas`` makes
Kueue create a new workload slice for the whole new size; its pods wait behind
the scheduling gate ``kueue.x-k8s.io/elastic-job`` until Kueue admits that
slice, which it does all at once or not at all. Asking for more than the
ClusterQueue can give therefore admits nothing: the autoscaler must know the
headroom before it asks.

**Headroom**, per resource the ClusterQueue covers, from its spec and
``status.flavorsReservation`` (what admitted workloads reserve, this cluster's
admitted slice included):

- alone: ``nominalQuota - reserved``;
- in a cohort (``spec.cohortName``): what the whole cohort has unreserved,
  each other member counting at most its ``lendingLimit``, capped by this
  queue's ``borrowingLimit`` (``nominalQuota + borrowingLimit - reserved``).

A resource counts in the flavor where it has the most headroom (a pod set
gets one flavor per resource group). Less what this cluster's launches not
admitted yet take (replicas raised without a pod yet, pods still gated).

This is an estimate made before asking: Kueue decides. Not modelled:
hierarchical cohorts (``Cohort`` objects: only the members sharing the
``cohortName`` count), fair sharing, preemption of other workloads to make
room, admission checks. If it is wrong, the pods wait gated, the launch
times out and the group backs off like any failed launch.

Reading ClusterQueues (cluster-scoped) needs a ClusterRole the chart grants
per namespace (``autoscaler.kueueNamespaces``); without it the autoscaler
plans without a Kueue quota and says so once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from rayscale.api.quantity import QuantityError, parse_quantity
from rayscale.planner.state import MAX_AMOUNT, Quota

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ELASTIC_ANNOTATION = "kueue.x-k8s.io/elastic-job"
#: the scheduling gate on the pods of a slice Kueue has not admitted yet
ELASTIC_GATE = "kueue.x-k8s.io/elastic-job"
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
_STANDARD = ("cpu", "memory", "pods", "ephemeral-storage")


def elastic_queue(labels: Mapping[str, str] | None,
                  annotations: Mapping[str, str] | None) -> str | None:
    """The LocalQueue of an elastic RayCluster under Kueue, else None."""
    queue = (labels or {}).get(QUEUE_LABEL)
    if queue and (annotations or {}).get(ELASTIC_ANNOTATION) == "true":
        return queue
    return None


def gated(scheduling_gates: Iterable[Any] | None) -> bool:
    """Whether a pod still waits for Kueue to admit its workload slice."""
    return any(getattr(g, "name", None) == ELASTIC_GATE for g in scheduling_gates or [])


def cost_key(resource: str) -> str:
    """The planner key a Kueue resource is counted under (the names of
    :func:`rayscale.providers.kube_quota.pod_cost`)."""
    return resource if resource in _STANDARD else f"requests.{resource}"


def _quantity(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except QuantityError:
        return None


def _quotas(cq: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Decimal | None]]:
    """(flavor, resource) -> nominal, borrowing and lending limits."""
    out: dict[tuple[str, str], dict[str, Decimal | None]] = {}
    for group in (cq.get("spec") or {}).get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            for res in flavor.get("resources") or []:
                out[(str(flavor.get("name")), str(res.get("name")))] = {
                    "nominal": _quantity(res.get("nominalQuota")) or Decimal(0),
                    "borrowing": _quantity(res.get("borrowingLimit")),
                    "lending": _quantity(res.get("lendingLimit")),
                }
    return out


def _reserved(cq: Mapping[str, Any]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for flavor in (cq.get("status") or {}).get("flavorsReservation") or []:
        for res in flavor.get("resources") or []:
            total = _quantity(res.get("total"))
            if total is not None:
                out[(str(flavor.get("name")), str(res.get("name")))] = total
    return out


def headroom(cq: Mapping[str, Any], cohort: Iterable[Mapping[str, Any]] = ()) -> dict[str, float]:
    """Per resource, what the ClusterQueue ``cq`` can still admit; ``cohort``: the other
    ClusterQueues with the same ``cohortName``."""
    mine, used = _quotas(cq), _reserved(cq)
    others = [(_quotas(o), _reserved(o)) for o in cohort]
    best: dict[str, Decimal] = {}
    for (flavor, resource), limits in mine.items():
        nominal = limits["nominal"] or Decimal(0)
        reserved = used.get((flavor, resource), Decimal(0))
        left = nominal - reserved
        if others:
            pool = left
            for quotas, reserved_there in others:
                theirs = quotas.get((flavor, resource))
                if theirs is None:
                    continue
                spare = (theirs["nominal"] or Decimal(0)) - reserved_there.get(
                    (flavor, resource), Decimal(0))
                lending = theirs["lending"]
                pool += min(spare, lending) if lending is not None else spare
            borrowing = limits["borrowing"]
            left = pool if borrowing is None else min(pool, nominal + borrowing - reserved)
        if resource not in best or left > best[resource]:
            best[resource] = left
    return {r: min(float(MAX_AMOUNT), max(0.0, float(v))) for r, v in best.items()}


def kueue_quota(cluster_queue: str, room: Mapping[str, float],
                uncounted: Mapping[str, float]) -> Quota | None:
    """The planner quota ``clusterqueue/<name>``: ``room`` less ``uncounted`` by cost key."""
    left = {}
    for resource, amount in room.items():
        key = cost_key(resource)
        left[key] = max(0.0, amount - uncounted.get(key, 0.0))
    return Quota(name=f"clusterqueue/{cluster_queue}", left=left) if left else None


__all__ = ["ELASTIC_ANNOTATION", "ELASTIC_GATE", "KUEUE_GROUP", "KUEUE_VERSION", "QUEUE_LABEL",
           "cost_key", "elastic_queue", "gated", "headroom", "kueue_quota"]
