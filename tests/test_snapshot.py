"""Joining the provider's nodes with Ray's view, and the ClusterState it gives the planner."""

from __future__ import annotations

from rayscale.autoscaler.snapshot import cluster_state, join
from rayscale.labels import EXTERNAL_GROUP, HEAD_GROUP
from rayscale.observe.ray_state import Observation, RayNode
from rayscale.planner import parse_state, plan, plan_json
from rayscale.planner.state import Shape
from rayscale.providers.base import ProviderNode
from rayscale.spec import parse_cluster_spec

SPEC = parse_cluster_spec({
    "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
    "spec": {
        "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                          "template": {"spec": {"containers": [{"name": "h"}]}}},
        "workerGroupSpecs": [{
            "groupName": "w", "minReplicas": 0, "maxReplicas": 4,
            "template": {"spec": {"containers": [{"name": "w",
                                                  "resources": {"limits": {"cpu": "1"}}}]}},
        }],
    },
})


def ray_node(nid: str, ip: str, labels: dict[str, str], status: str = "running",
             idle_s: float = 0.0, cpu: float = 1) -> RayNode:
    return RayNode(nid, ip, status, idle_s, {"CPU": cpu}, {"CPU": cpu}, labels)  # type: ignore[arg-type]


def test_join_marks_pending_running_terminating_and_head() -> None:
    observation = Observation(
        nodes=[
            ray_node("aa", "127.10.0.2", {}, cpu=0),
            ray_node("bb", "127.10.1.2", {"rayscale.io/node": "w-0", "rayscale.io/group": "w"},
                     status="idle", idle_s=30),
            ray_node("cc", "127.10.1.3", {"rayscale.io/node": "w-1"}, status="draining"),
            ray_node("dd", "127.10.1.9", {}, status="dead"),
            ray_node("ee", "127.99.0.1", {}, cpu=0),
        ],
        tasks=[Shape(resources={"CPU": 1}, count=3)],
    )
    provider = [
        ProviderNode("w-0", "w", "started", 1.0, "127.10.1.2", 100),
        ProviderNode("w-1", "w", "started", 1.0, "127.10.1.3", 101),
        ProviderNode("w-2", "w", "started", 2.0, "127.10.1.4", 102),  # not registered yet
        ProviderNode("w-3", "w", "dead", 2.0, "127.10.1.5", 103),
    ]
    snap = join(provider, observation, head_ip="127.10.0.2")
    by_id = {v.id: v for v in snap.nodes}
    assert by_id["aa"].group == HEAD_GROUP
    assert by_id["ee"].group == EXTERNAL_GROUP
    assert by_id["w-0"].status == "running" and by_id["w-0"].idle_s == 30
    assert by_id["w-1"].status == "terminating"
    assert by_id["w-2"].status == "pending"
    assert "w-3" not in by_id and "dd" not in by_id

    state = cluster_state(SPEC, snap, not_launchable=set())
    # 3 one-CPU tasks: idle w-0 takes one, pending w-2 another, one more launch
    assert plan(state).launch == {"w": 1}
    assert state.groups["w"].max == 4
    assert cluster_state(SPEC, snap, {"w"}).groups["w"].launchable is False
    # the typed state is a valid plan-format document, and plans the same as one
    document = state.model_dump(mode="json")
    assert parse_state(document).model_dump(mode="json") == document
    assert plan_json(document)["launch"] == {"w": 1}
    assert [n["id"] for n in document["nodes"]] == ["aa", "ee", "w-0", "w-1", "w-2"]
    assert document["demand"]["tasks"] == [
        {"resources": {"CPU": 1.0}, "count": 3, "label_selector": {}, "fallback_strategy": []}
    ]


def test_a_node_whose_process_exited_is_hidden_while_ray_still_calls_it_alive() -> None:
    labels = {"rayscale.io/node": "w-0", "rayscale.io/group": "w"}
    observation = Observation(nodes=[ray_node("aa", "127.10.0.2", {}, cpu=0),
                                     ray_node("bb", "127.10.1.2", labels)])
    dead = [ProviderNode("w-0", "w", "dead", 1.0, "127.10.1.2", 100)]
    # without the memory of what exited, Ray's stale view shows it as someone else's node
    stale = {v.id: v for v in join(dead, observation, head_ip="127.10.0.2").nodes}
    assert stale["w-0"].status == "running" and stale["w-0"].group.startswith(EXTERNAL_GROUP)
    for provider in (dead, []):  # the round it is found dead, and the rounds after
        snap = join(provider, observation, head_ip="127.10.0.2", gone={"w-0"})
        assert [v.group for v in snap.nodes] == [HEAD_GROUP]
