"""A namespace's ResourceQuotas as the planner's quotas, and what a worker pod costs.

The planner (plan-format.md, "Quotas") takes, per quota, what is left by key,
and per group what one node takes. On Kubernetes:

- **Left**: each ResourceQuota of the namespace, ``status.hard - status.used``
  for the keys a worker pod is counted under (:data:`POD_KEYS` and
  ``requests.<extended resource>``), less what the launches the quota has
  not counted yet will take (replicas raised, pods not created yet). The
  quota admission plugin adds a pod to ``used`` when it admits the pod, so
  every created pod is in ``used`` already.
- **Cost**: one worker pod of a group: ``pods`` 1 and the sum of its
  containers' requests (a request defaults to its limit, as the API server
  defaults it), and limits; ``cpu`` and ``memory`` are ``requests.cpu`` and
  ``requests.memory``, as ResourceQuota counts them.

Not modelled: init containers (a pod's request is the larger of its
containers' sum and its largest init container), pod overhead, LimitRange
defaults for containers without requests, and quotas with ``scopes`` or a
``scopeSelector`` (PriorityClass, BestEffort, ...): whether they count a
pod depends on more than its resources. A pod the API refuses is a refused
launch: the group backs off and its demand moves on (see kuberay.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from rayscale.api import WorkerGroupSpec
from rayscale.api.quantity import QuantityError, parse_quantity
from rayscale.planner.state import MAX_AMOUNT, Quota

#: the quota keys a pod counts under besides ``requests.<extended resource>``
POD_KEYS = ("pods", "count/pods", "cpu", "memory", "requests.cpu", "requests.memory",
            "limits.cpu", "limits.memory", "ephemeral-storage", "requests.ephemeral-storage",
            "limits.ephemeral-storage")
_STANDARD = ("cpu", "memory", "ephemeral-storage")


def pod_cost(group: WorkerGroupSpec) -> dict[str, float]:
    """What one worker pod of ``group`` takes, by quota key."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    for container in group.template.spec.containers:
        res = container.resources
        for name, value in res.limits.items():
            limits[name] = limits.get(name, Decimal(0)) + parse_quantity(value)
        for name, value in {**res.limits, **res.requests}.items():  # request defaults to limit
            requests[name] = requests.get(name, Decimal(0)) + parse_quantity(value)
    cost: dict[str, float] = {"pods": 1.0, "count/pods": 1.0}
    for name, amount in requests.items():
        cost[f"requests.{name}"] = _amount(amount)
        if name in _STANDARD:
            cost[name] = _amount(amount)
    for name, amount in limits.items():
        if name in _STANDARD:
            cost[f"limits.{name}"] = _amount(amount)
    return cost


def _amount(quantity: Decimal) -> float:
    """Within what the planner takes (a request beyond it no quota could hold anyway)."""
    return min(float(MAX_AMOUNT), max(0.0, float(quantity)))


def _counted(key: str) -> bool:
    return key in POD_KEYS or key.startswith("requests.")


def _amounts(values: Mapping[str, Any] | None) -> dict[str, Decimal]:
    out = {}
    for key, value in (values or {}).items():
        try:
            out[key] = parse_quantity(value)
        except QuantityError:
            continue  # a key this reader cannot count is left out, not guessed
    return out


def quota_left(quota: Mapping[str, Any], uncounted: Mapping[str, float]) -> Quota | None:
    """One ResourceQuota (as the API returns it) as a planner quota; None if it has scopes
    or no key a pod counts under. Before the quota controller has written its status,
    ``spec.hard`` with nothing used (admission counts pods from then on). ``uncounted``:
    what launches not yet in ``used`` will take, by key."""
    spec = quota.get("spec") or {}
    if spec.get("scopes") or spec.get("scopeSelector"):
        return None
    status = quota.get("status") or {}
    hard = _amounts(status.get("hard") or spec.get("hard"))
    used = _amounts(status.get("used"))
    left = {}
    for key, limit in hard.items():
        if not _counted(key):
            continue
        rest = float(limit - used.get(key, Decimal(0))) - uncounted.get(key, 0.0)
        left[key] = min(float(MAX_AMOUNT), max(0.0, rest))
    if not left:
        return None
    meta = quota.get("metadata") or {}
    return Quota(name=f"{meta.get('namespace')}/{meta.get('name')}", left=left)


def uncounted_cost(costs: Mapping[str, Mapping[str, float]],
                   launching: Mapping[str, int]) -> dict[str, float]:
    """What ``launching[g]`` pods not created yet of each group will take, by key."""
    out: dict[str, float] = {}
    for group, n in launching.items():
        for key, amount in costs.get(group, {}).items():
            out[key] = out.get(key, 0.0) + n * amount
    return out


def namespace_quotas(quotas: Iterable[Mapping[str, Any]], costs: Mapping[str, Mapping[str, float]],
                     launching: Mapping[str, int]) -> list[Quota]:
    uncounted = uncounted_cost(costs, launching)
    return [q for q in (quota_left(rq, uncounted) for rq in quotas) if q is not None]
