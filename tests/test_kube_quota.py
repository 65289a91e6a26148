"""Quota-aware scaling: a namespace's ResourceQuotas as the planner's quotas, what a worker
pod costs, and the loop stopping at the quota (capped, with the quota's name)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler
from rayscale.observe.ray_state import Observation
from rayscale.planner.state import Shape
from rayscale.providers.base import ProviderNode, QuotaView
from rayscale.providers.kube_quota import namespace_quotas, pod_cost, quota_left
from rayscale.spec import parse_cluster_spec
from tests.test_headwatch import HEAD, WORKER, Provider, Scripted, _spec

GI = 2**30


def group(containers: list[dict[str, Any]]) -> Any:
    return parse_cluster_spec({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
        "spec": {"headGroupSpec": {"rayStartParams": {},
                                   "template": {"spec": {"containers": [{"name": "h"}]}}},
                 "workerGroupSpecs": [{"groupName": "w", "maxReplicas": 4, "rayStartParams": {},
                                       "template": {"spec": {"containers": containers}}}]},
    }).worker_groups[0]


def test_a_pod_costs_its_containers_requests_which_default_to_limits() -> None:
    cost = pod_cost(group([
        {"name": "ray", "resources": {"limits": {"cpu": "2", "memory": "4Gi",
                                                 "nvidia.com/gpu": "1"},
                                      "requests": {"cpu": "1500m"}}},
        {"name": "log", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
    ]))
    assert cost["pods"] == 1 and cost["count/pods"] == 1
    assert cost["requests.cpu"] == cost["cpu"] == 1.6
    assert cost["requests.memory"] == cost["memory"] == 4 * GI + 64 * 2**20
    assert cost["limits.cpu"] == 2 and cost["limits.memory"] == 4 * GI
    assert cost["requests.nvidia.com/gpu"] == 1


def rq(name: str, hard: dict[str, str], used: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team-a"},
            "spec": {"hard": hard, **spec}, "status": {"hard": hard, "used": used}}


def test_what_is_left_is_hard_less_used_less_launches_without_a_pod() -> None:
    quota = quota_left(rq("compute", {"pods": "10", "requests.cpu": "8", "requests.memory": "16Gi",
                                      "services": "5", "limits.cpu": "20"},
                          {"pods": "2", "requests.cpu": "2500m", "requests.memory": "3Gi"}),
                       {"pods": 1, "requests.cpu": 1.0})
    assert quota is not None and quota.name == "team-a/compute"
    assert quota.left == {"pods": 7, "requests.cpu": 4.5, "requests.memory": 13 * GI,
                          "limits.cpu": 20}, "services is not a pod's"
    over = quota_left(rq("tight", {"pods": "2"}, {"pods": "3"}), {})
    assert over is not None and over.left == {"pods": 0}, "never below 0"


def test_scoped_quotas_and_quotas_of_no_pod_key_are_left_out() -> None:
    assert quota_left(rq("s", {"pods": "1"}, {}, scopes=["BestEffort"]), {}) is None
    assert quota_left(rq("p", {"pods": "1"}, {}, scopeSelector={"matchExpressions": []}),
                      {}) is None
    assert quota_left(rq("svc", {"services": "3", "configmaps": "9"}, {}), {}) is None
    costs = {"w": {"pods": 1.0}}
    found = namespace_quotas([rq("a", {"pods": "4"}, {"pods": "1"}),
                              rq("b", {"services": "1"}, {})], costs, {"w": 2})
    assert [(q.name, q.left) for q in found] == [("team-a/a", {"pods": 1})]


class QuotaProvider(Provider):
    def __init__(self, left_pods: int) -> None:
        super().__init__()
        self.left_pods = left_pods

    def quotas(self) -> QuotaView:
        from rayscale.planner.state import Quota

        return QuotaView([Quota(name="team-a/compute", left={"pods": self.left_pods})],
                         {"w": {"pods": 1.0}})


def test_the_loop_launches_up_to_the_quota_and_says_the_quota_holds_the_rest() -> None:
    observer, provider, events = Scripted(), QuotaProvider(left_pods=2), EventLog(None)
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2",  # type: ignore[arg-type]
                      events=events)
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running")],
                                tasks=[Shape(resources={"CPU": 1.0}, count=5)])
    plan = loop.tick()
    assert plan.launch == {"w": 2}
    assert plan.limited == {"w": "quota:team-a/compute"}
    capped = [e for e in events.recent if e.kind == "capped"]
    assert len(capped) == 1 and capped[0].reason == "quota:team-a/compute"
    assert "quota team-a/compute" in capped[0].message
    assert loop.metrics.limited.labels("w", "quota")._value.get() == 1  # type: ignore[attr-defined]
    loop.tick()
    assert len([e for e in events.recent if e.kind == "capped"]) == 1, "said once"


def test_a_refused_launch_is_a_failed_launch_with_its_reason() -> None:
    observer, provider, events = Scripted(), Provider(), EventLog(None)
    provider.listed.append(ProviderNode("pending:w:0", "w", "dead", time.time(),
                                        reason="the API refused the pod: exceeded quota"))
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2",  # type: ignore[arg-type]
                      events=events)
    loop.tick()
    failed = [e for e in events.recent if e.kind == "launch_failed"]
    assert failed and "exceeded quota" in failed[0].message
    assert any(e.kind == "backoff" for e in events.recent)
