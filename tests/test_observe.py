"""Ray's GCS reply (a real ClusterResourceState protobuf) into the planner's own types."""

from __future__ import annotations

from typing import Any

from rayscale.observe.ray_state import observation
from rayscale.planner.state import FallbackOption, Gang, Shape


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


# --- label selectors, shaped as Ray 2.60's GCS reported them on a live cluster -----------


Conditions = dict[str, tuple[str, list[str]]]


def _selector(message: Any, conditions: Conditions) -> Any:
    """Fill a ray.rpc.LabelSelector: ``{key: (operator, values)}``."""
    from ray.core.generated import common_pb2

    for key, (operator, values) in conditions.items():
        message.label_constraints.add(
            label_key=key,
            operator=common_pb2.LabelSelectorOperator.Value(f"LABEL_OPERATOR_{operator}"),
            label_values=values,
        )
    return message


def selector_state() -> Any:
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.ClusterResourceState()
    # @ray.remote(num_cpus=1, label_selector={"ray.io/market-type": "spot",
    #   "cpu-family": "in(intel,amd)", "zone": "!us-a", "tier": "!in(x,y)"},
    #   fallback_strategy=[{"label_selector": {"ray.io/market-type": "on-demand"}},
    #                      {"label_selector": {"cpu-family": "arm"}}]) x3, two classes
    for count in (3, 2):
        request = state.pending_resource_requests.add(count=count).request
        request.resources_bundle["CPU"] = 1.0
        _selector(request.label_selectors.add(), {
            "ray.io/market-type": ("IN", ["spot"]), "cpu-family": ("IN", ["amd", "intel"]),
            "zone": ("NOT_IN", ["us-a"]), "tier": ("NOT_IN", ["x", "y"]),
        })
        _selector(request.label_selectors.add(), {"ray.io/market-type": ("IN", ["on-demand"])})
        _selector(request.label_selectors.add(), {"cpu-family": ("IN", ["arm"])})
    # a plain task: one empty selector; a floor (request_resources): none at all
    plain = state.pending_resource_requests.add(count=2).request
    plain.resources_bundle["CPU"] = 1.0
    plain.label_selectors.add()
    only = state.pending_resource_requests.add(count=1).request
    only.resources_bundle["CPU"] = 1.0
    _selector(only.label_selectors.add(), {"cpu-family": ("IN", ["intel"])})
    floor = state.cluster_resource_constraints.add()
    floor.resource_requests.add(count=2).request.resources_bundle["CPU"] = 1.0
    pinned = floor.resource_requests.add(count=1).request
    pinned.resources_bundle["CPU"] = 2.0
    _selector(pinned.label_selectors.add(), {"rayscale.io/group": ("IN", ["small"])})
    # placement_group([{"CPU": 1}, {"CPU": 2}], strategy="SPREAD", bundle_label_selector=[
    #   {"ray.io/market-type": "spot", "ray.io/region": "!us-central2"},
    #   {"cpu-family": "in(intel,amd)"}]): the legacy `requests` carry no selectors
    for _ in range(2):
        gang = state.pending_gang_resource_requests.add(details="ab01:SPREAD|PENDING")
        for cpus in (1.0, 2.0):
            gang.requests.add().resources_bundle["CPU"] = cpus
        chosen = gang.bundle_selectors.add()
        first = chosen.resource_requests.add()
        first.resources_bundle["CPU"] = 1.0
        _selector(first.label_selectors.add(), {"ray.io/region": ("NOT_IN", ["us-central2"]),
                                                "ray.io/market-type": ("IN", ["spot"])})
        second = chosen.resource_requests.add()
        second.resources_bundle["CPU"] = 2.0
        _selector(second.label_selectors.add(), {"cpu-family": ("IN", ["amd", "intel"])})
    # STRICT_SPREAD with bundle_label_selector=[{"a": "b"}, {}]: the empty one has none
    strict = state.pending_gang_resource_requests.add(details="cd01:STRICT_SPREAD|PENDING")
    chosen = strict.bundle_selectors.add()
    for i in range(2):
        strict.requests.add().resources_bundle["CPU"] = 1.0
        bundle = chosen.resource_requests.add()
        bundle.resources_bundle["CPU"] = 1.0
        bundle.placement_constraints.add().anti_affinity.label_name = "_PG_cd01"
        if i == 0:
            _selector(bundle.label_selectors.add(), {"a": ("IN", ["b"])})
    # STRICT_PACK without selectors: bundle_selectors repeat the bundles
    pack = state.pending_gang_resource_requests.add(details="ef01:STRICT_PACK|PENDING")
    legacy = pack.requests.add()
    legacy.resources_bundle["CPU"] = 1.0
    legacy.placement_constraints.add().affinity.label_name = "_PG_ef01"
    pack.bundle_selectors.add().resource_requests.add().CopyFrom(legacy)
    return state


def test_selectors_and_fallbacks_become_the_shapes_and_only_equal_selectors_merge() -> None:
    obs = observation(selector_state())
    assert obs.tasks == [
        Shape(
            resources={"CPU": 1.0}, count=5,
            label_selector={"ray.io/market-type": "spot", "cpu-family": "in(amd,intel)",
                            "zone": "!us-a", "tier": "!in(x,y)"},
            fallback_strategy=[
                FallbackOption(label_selector={"ray.io/market-type": "on-demand"}),
                FallbackOption(label_selector={"cpu-family": "arm"}),
            ],
        ),
        Shape(resources={"CPU": 1.0}, count=2),
        Shape(resources={"CPU": 1.0}, count=1, label_selector={"cpu-family": "intel"}),
    ]
    assert obs.floor == [
        Shape(resources={"CPU": 1.0}, count=2),
        Shape(resources={"CPU": 2.0}, count=1, label_selector={"rayscale.io/group": "small"}),
    ]
    # the planner reads them back as Ray would match them
    alternatives = obs.tasks[0].alternatives()
    assert len(alternatives) == 3 and obs.tasks[1].alternatives() == ()


def test_gang_bundles_and_selectors_come_from_bundle_selectors() -> None:
    obs = observation(selector_state())
    assert obs.gangs == [
        Gang(strategy="SPREAD", bundles=[{"CPU": 1.0}, {"CPU": 2.0}], count=2,
             bundle_label_selector=[
                 {"ray.io/region": "!us-central2", "ray.io/market-type": "spot"},
                 {"cpu-family": "in(amd,intel)"},
             ]),
        Gang(strategy="STRICT_SPREAD", bundles=[{"CPU": 1.0}, {"CPU": 1.0}], count=1,
             bundle_label_selector=[{"a": "b"}, {}]),
        Gang(strategy="STRICT_PACK", bundles=[{"CPU": 1.0}], count=1),
    ]


def request_with(*selectors: Conditions) -> Any:
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.ClusterResourceState()
    request = state.pending_resource_requests.add(count=1).request
    request.resources_bundle["CPU"] = 1.0
    for conditions in selectors:
        _selector(request.label_selectors.add(), conditions)
    return state


def test_a_selector_no_node_can_match_is_no_alternative() -> None:
    # Ray's syntax never writes these; a newer Ray might. An unknown operator matches
    # nothing (as in Ray's own autoscaler), and so does an IN on values no label can have.
    unknown = request_with({"a": ("UNSPECIFIED", ["x"])}, {"b": ("IN", ["y"])})
    assert observation(unknown).tasks == [
        Shape(resources={"CPU": 1.0}, count=1, label_selector={"b": "y"})
    ]
    assert observation(request_with({"a": ("IN", ["bad value!"])})).tasks == []
    assert observation(request_with({"bad key!": ("IN", ["x"])})).tasks == []
    # a NOT_IN on values (or a key) no label can have always holds
    lenient = request_with({"a": ("NOT_IN", ["bad value!"]), "bad key!": ("NOT_IN", ["x"]),
                            "b": ("IN", ["bad value!", "y"])})
    assert observation(lenient).tasks == [
        Shape(resources={"CPU": 1.0}, count=1, label_selector={"b": "y"})
    ]
    # an empty first alternative: any node, the fallbacks never apply
    anywhere = request_with({}, {"b": ("IN", ["y"])})
    assert observation(anywhere).tasks == [Shape(resources={"CPU": 1.0}, count=1)]
    # the empty value: alone, as Ray writes {"a": ""}
    empty = request_with({"a": ("IN", [""]), "b": ("NOT_IN", [""])})
    assert observation(empty).tasks == [
        Shape(resources={"CPU": 1.0}, count=1, label_selector={"a": ""})
    ]


def test_a_gang_with_a_bundle_no_node_can_match_is_left_out() -> None:
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.ClusterResourceState()
    gang = state.pending_gang_resource_requests.add(details="PACK")
    chosen = gang.bundle_selectors.add()
    for values in (["x"], []):
        bundle = chosen.resource_requests.add()
        bundle.resources_bundle["CPU"] = 1.0
        _selector(bundle.label_selectors.add(), {"a": ("IN", values)})
    assert observation(state).gangs == []


def test_in_with_a_space_is_taken_as_ray_schedules_it() -> None:
    # {"cpu-family": "in(intel, amd)", "tier": "!in(x, y)"}: Ray 2.60 reports the values
    # with the space and matches them so (a node labelled "amd" does not take the task)
    spaced = request_with({"cpu-family": ("IN", ["intel", " amd"]),
                           "tier": ("NOT_IN", ["x", " y"])})
    assert observation(spaced).tasks == [
        Shape(resources={"CPU": 1.0}, count=1,
              label_selector={"cpu-family": "intel", "tier": "!x"})
    ]
    assert observation(request_with({"cpu-family": ("IN", [" amd"])})).tasks == []
