"""Ray's GCS reply (a real ClusterResourceState protobuf) into the planner's own types."""

from __future__ import annotations

from typing import Any

from rayscale.observe.ray_state import observation
from rayscale.planner.state import Gang, Shape


def gcs_state() -> Any:
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.ClusterResourceState()
    head = state.node_states.add(node_id=bytes.fromhex("aa" * 28), node_ip_address="127.10.0.2",
                                 status=pb.NodeStatus.Value("RUNNING"))
    head.total_resources["CPU"] = 0.0
    idle = state.node_states.add(node_id=bytes.fromhex("bb" * 28), node_ip_address="127.10.1.2",
                                 status=pb.NodeStatus.Value("IDLE"), idle_duration_ms=2500)
    idle.total_resources["CPU"] = 2.0
    idle.available_resources["CPU"] = 2.0
    idle.available_resources["GPU"] = -1.0  # never a negative amount in a model
    idle.labels["rayscale.io/node"] = "w-0"
    state.node_states.add(node_id=bytes.fromhex("cc" * 28), node_ip_address="127.10.1.3",
                          status=pb.NodeStatus.Value("DEAD"), idle_duration_ms=900)
    # one entry per scheduling class: three classes share the shape {CPU: 1}
    for count, bundle in ((2, {"CPU": 1.0}), (3, {"CPU": 1.0, "GPU": 0.0}), (1, {"CPU": 1.0}),
                          (4, {"CPU": 0.5, "memory": 2.0**30}), (0, {"CPU": 8.0})):
        request = state.pending_resource_requests.add(count=count)
        request.request.resources_bundle.update(bundle)
    for _ in range(2):
        gang = state.pending_gang_resource_requests.add(details="placement group PACK")
        for _ in range(2):
            bundle = gang.requests.add()
            bundle.resources_bundle["CPU"] = 1.0
            bundle.placement_constraints.add().anti_affinity.label_name = "_PG_x"
    state.pending_gang_resource_requests.add(details="SPREAD").requests.add() \
        .resources_bundle["CPU"] = 2.0
    floor = state.cluster_resource_constraints.add()
    floor.resource_requests.add(count=2).request.resources_bundle["CPU"] = 1.0
    floor.resource_requests.add(count=1).request.resources_bundle["CPU"] = 1.0
    return state


def test_gcs_reply_becomes_planner_types_with_identical_shapes_merged_once() -> None:
    obs = observation(gcs_state())
    assert obs.tasks == [
        Shape(resources={"CPU": 1.0}, count=6),
        Shape(resources={"CPU": 0.5, "memory": float(2**30)}, count=4),
    ]
    assert obs.gangs == [
        Gang(strategy="STRICT_SPREAD", bundles=[{"CPU": 1.0}, {"CPU": 1.0}], count=2),
        Gang(strategy="SPREAD", bundles=[{"CPU": 2.0}], count=1),
    ]
    assert obs.floor == [Shape(resources={"CPU": 1.0}, count=3)]


def test_gcs_nodes_keep_status_idle_time_labels_and_only_positive_amounts() -> None:
    obs = observation(gcs_state())
    head, idle, dead = obs.nodes
    assert head.node_id == "aa" * 28 and head.status == "running" and head.total == {}
    assert idle.status == "idle" and idle.idle_s == 2.5
    assert idle.total == {"CPU": 2.0} and idle.available == {"CPU": 2.0}
    assert idle.labels == {"rayscale.io/node": "w-0"}
    assert dead.status == "dead" and dead.idle_s == 0.0
    assert [n.node_id for n in obs.alive()] == ["aa" * 28, "bb" * 28]
