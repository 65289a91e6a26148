"""What Kueue will still admit for an elastic RayCluster (providers/kube_kueue.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rayscale.providers.kube_kueue import cost_key, elastic_queue, headroom, kueue_quota
from rayscale.providers.kube_quota import pod_cost
from rayscale.spec import parse_cluster_spec
from tests.k8s.operator.test_autoscaling import seeds_cluster


def cq(name: str, cpu: str, reserved: str = "0", cohort: str | None = None,
       borrowing: str | None = None, lending: str | None = None,
       flavor: str = "rf") -> dict[str, Any]:
    res: dict[str, Any] = {"name": "cpu", "nominalQuota": cpu}
    if borrowing is not None:
        res["borrowingLimit"] = borrowing
    if lending is not None:
        res["lendingLimit"] = lending
    spec: dict[str, Any] = {"resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
        {"name": flavor, "resources": [res]}]}]}
    if cohort:
        spec["cohortName"] = cohort
    return {"metadata": {"name": name}, "spec": spec, "status": {"flavorsReservation": [
        {"name": flavor, "resources": [{"name": "cpu", "total": reserved}]}]}}


def test_alone_what_is_left_of_the_nominal_quota() -> None:
    assert headroom(cq("a", "3", reserved="1")) == {"cpu": 2.0}
    assert headroom(cq("a", "3", reserved="4")) == {"cpu": 0.0}  # never negative
    assert headroom(cq("a", "500m")) == {"cpu": 0.5}


def test_in_a_cohort_what_the_others_lend_capped_by_the_borrowing_limit() -> None:
    mine = cq("a", "2", reserved="1", cohort="co")
    assert headroom(mine, [cq("b", "4", reserved="1", cohort="co")]) == {"cpu": 4.0}
    assert headroom(mine, [cq("b", "4", reserved="1", cohort="co", lending="1")]) == {"cpu": 2.0}
    capped = cq("a", "2", reserved="1", cohort="co", borrowing="1")
    assert headroom(capped, [cq("b", "4", cohort="co")]) == {"cpu": 2.0}
    # another member borrowing already takes from the pool
    assert headroom(mine, [cq("b", "1", reserved="2", cohort="co")]) == {"cpu": 0.0}
    # a member without the flavor lends nothing
    assert headroom(mine, [cq("b", "4", cohort="co", flavor="other")]) == {"cpu": 1.0}


def test_the_flavor_with_the_most_room() -> None:
    two = cq("a", "2", reserved="2")
    two["spec"]["resourceGroups"][0]["flavors"].append(
        {"name": "spot", "resources": [{"name": "cpu", "nominalQuota": "3"}]})
    assert headroom(two) == {"cpu": 3.0}


def test_quota_less_what_was_asked_and_not_admitted_in_the_planner_keys() -> None:
    quota = kueue_quota("team", {"cpu": 3.0, "memory": 8e9, "nvidia.com/gpu": 1.0},
                        {"cpu": 1.0, "memory": 1e9})
    assert quota is not None and quota.name == "clusterqueue/team"
    assert quota.left == {"cpu": 2.0, "memory": 7e9, "requests.nvidia.com/gpu": 1.0}
    assert kueue_quota("team", {}, {}) is None
    # the keys match what a worker pod costs
    spec = parse_cluster_spec(seeds_cluster("x"))
    cost = pod_cost(spec.worker_groups[0])
    assert {cost_key("cpu"), cost_key("memory"), cost_key("pods")} <= set(cost)


@pytest.mark.parametrize(("labels", "annotations", "queue"), [
    ({"kueue.x-k8s.io/queue-name": "lq"}, {"kueue.x-k8s.io/elastic-job": "true"}, "lq"),
    ({"kueue.x-k8s.io/queue-name": "lq"}, {}, None),  # not elastic: Kueue admits it whole
    ({}, {"kueue.x-k8s.io/elastic-job": "true"}, None),
])
def test_only_elastic_clusters_in_a_queue(labels: dict[str, str], annotations: dict[str, str],
                                          queue: str | None) -> None:
    assert elastic_queue(labels, annotations) == queue
