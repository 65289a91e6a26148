"""The cluster config and autoscaling state the loop reports, read back with Ray's own readers."""

from __future__ import annotations

import sys
import time
from typing import Any

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler
from rayscale.labels import HEAD_GROUP, NODE_LABEL
from rayscale.observe.gcs_report import (
    AutoscalingReport,
    FailedLaunch,
    NodeGroup,
    PendingNode,
    autoscaling_state,
    cluster_config,
)
from rayscale.observe.ray_state import Observation, RayNode
from rayscale.planner.plan import Unplaced
from rayscale.planner.state import Gang, Shape
from rayscale.providers.base import ProviderNode
from rayscale.spec import parse_cluster_spec


def spec(max_replicas: int | None = 4, suspend: bool = False) -> Any:
    group: dict[str, Any] = {
        "groupName": "w", "minReplicas": 1, "suspend": suspend,
        "template": {"spec": {"containers": [{"name": "w", "resources": {
            "limits": {"cpu": "1500m", "memory": "1Gi"}}}]}},
    }
    if max_replicas is not None:
        group["maxReplicas"] = max_replicas
    return parse_cluster_spec({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
        "spec": {
            "headGroupSpec": {"rayStartParams": {"num-cpus": "2"},
                              "template": {"spec": {"containers": [{"name": "h"}]}}},
            "workerGroupSpecs": [group],
        },
    })


def test_cluster_config_is_what_ray_data_and_train_read() -> None:
    import ray._private.state as ray_state
    from ray.core.generated import autoscaler_pb2 as pb

    config = cluster_config([
        NodeGroup(HEAD_GROUP, {"CPU": 2.0, "node:127.10.0.2": 1.0}, 1, 1),
        NodeGroup("w", {"CPU": 1.5, "memory": 2.0**30, "GPU": 0.25, "zero": 0.0}, 1, 4),
        NodeGroup("any", {"CPU": 4.0}, 0, None),
    ])
    again = pb.ClusterConfig.FromString(config.SerializeToString())
    head, w, unbounded = again.node_group_configs
    assert (head.name, dict(head.resources), head.min_count, head.max_count) == (
        HEAD_GROUP, {"CPU": 2}, 1, 1)
    # whole numbers (Ray's type); a positive fraction stays at least 1
    assert dict(w.resources) == {"CPU": 1, "memory": 2**30, "GPU": 1}
    assert (w.min_count, w.max_count) == (1, 4)
    assert unbounded.max_count == -1  # Ray's "no upper bound"
    # Ray's own arithmetic over it (Ray Train checks worker groups against this)
    calc = ray_state.GlobalState._calculate_max_resource_from_cluster_config
    assert calc(again, "GPU") == 4
    assert calc(again, "CPU") == sys.maxsize


def test_autoscaling_state_reads_back_through_rays_status_parser() -> None:
    from ray.autoscaler.v2.schema import Stats
    from ray.autoscaler.v2.utils import ClusterStatusFormatter, ClusterStatusParser
    from ray.core.generated import autoscaler_pb2 as pb

    now = time.time()
    report = AutoscalingReport(
        pending=(PendingNode("w-3", "w", "127.10.1.5", now - 2),
                 PendingNode("w-4", "w", None, now - 1), PendingNode("w-5", "w", None, now)),
        failed=(FailedLaunch("w", "w-1", "did not register in time", now - 70, now - 10),),
        infeasible=Unplaced(
            tasks=[Shape(resources={"GPU": 8.0}, count=2)],
            gangs=[Gang(strategy="STRICT_SPREAD", bundles=[{"CPU": 64.0}], count=1)],
            floor=[Shape(resources={"TPU": 1.0}, count=3)],
        ),
    )
    state = autoscaling_state(report, version=7, cluster_resource_state_version=3)
    assert (state.autoscaler_state_version, state.last_seen_cluster_resource_state_version) == (
        7, 3)
    assert [dict(r.resources_bundle) for r in state.infeasible_resource_requests] == [
        {"GPU": 8.0}, {"GPU": 8.0}]
    assert state.infeasible_gang_resource_requests[0].details == "STRICT_SPREAD"
    floor = state.infeasible_cluster_resource_constraints[0].resource_requests[0]
    assert (dict(floor.request.resources_bundle), floor.count) == ({"TPU": 1.0}, 3)

    reply = pb.GetClusterStatusReply(autoscaling_state=state)
    status = ClusterStatusParser.from_get_cluster_status_reply(reply, Stats())
    assert [(n.instance_id, n.ip_address, n.ray_node_type_name) for n in status.pending_nodes] \
        == [("w-3", "127.10.1.5", "w")]
    assert [(r.ray_node_type_name, r.count) for r in status.pending_launches] == [("w", 1)] * 2
    assert [(r.ray_node_type_name, r.details) for r in status.failed_launches] == [
        ("w", "node w-1: did not register in time")]
    text = ClusterStatusFormatter.format(status, verbose=True)
    assert " w, 2 launching" in text
    assert " w-3: w, starting ray" in text
    assert "w: LaunchFailed" in text and "did not register in time" in text


def test_infeasible_demand_carries_its_label_selectors_as_ray_writes_them() -> None:
    from ray.core.generated import common_pb2

    task = Shape.model_validate({
        "resources": {"CPU": 1.0}, "count": 1,
        "label_selector": {"market": "!in(spot,preemptible)", "zone": "a"},
        "fallback_strategy": [{"label_selector": {"zone": "b"}}],
    })
    gang = Gang.model_validate({"strategy": "PACK", "bundles": [{"CPU": 1.0}, {"CPU": 2.0}],
                                "bundle_label_selector": [{"zone": "c"}, {}]})
    report = AutoscalingReport(pending=(), failed=(),
                               infeasible=Unplaced(tasks=[task], gangs=[gang], floor=[task]))
    state = autoscaling_state(report, version=1, cluster_resource_state_version=1)
    ops = common_pb2.LabelSelectorOperator

    def constraints(request: Any) -> list[list[tuple[str, int, list[str]]]]:
        return [[(c.label_key, c.operator, list(c.label_values)) for c in s.label_constraints]
                for s in request.label_selectors]

    expected = [
        [("market", ops.LABEL_OPERATOR_NOT_IN, ["preemptible", "spot"]),
         ("zone", ops.LABEL_OPERATOR_IN, ["a"])],
        [("zone", ops.LABEL_OPERATOR_IN, ["b"])],  # the fallback, in order
    ]
    assert constraints(state.infeasible_resource_requests[0]) == expected
    floor = state.infeasible_cluster_resource_constraints[0].resource_requests[0].request
    assert constraints(floor) == expected
    bundles = state.infeasible_gang_resource_requests[0].requests
    assert [constraints(b) for b in bundles] == [[[("zone", ops.LABEL_OPERATOR_IN, ["c"])]], []]


class Recorder:
    """An observer that reports into lists (no Ray); its cluster never changes."""

    def __init__(self, nodes: list[RayNode]) -> None:
        self.nodes = nodes
        self.configs: list[list[NodeGroup]] = []
        self.states: list[tuple[AutoscalingReport, int]] = []

    def observe(self) -> Observation:
        return Observation(nodes=self.nodes, tasks=[Shape(resources={"GPU": 1.0}, count=1)],
                           version=42)

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]:
        return False, "busy"

    def report_cluster_config(self, groups: list[NodeGroup]) -> None:
        self.configs.append(groups)

    def report_autoscaling_state(self, report: AutoscalingReport, observed: int) -> None:
        self.states.append((report, observed))


class Provider:
    def __init__(self) -> None:
        self.listed: list[ProviderNode] = []

    def launch(self, group: str, count: int) -> list[str]:
        ids = [f"{group}-{len(self.listed) + k}" for k in range(count)]
        self.listed += [ProviderNode(i, group, "started", time.time(), f"127.10.1.{k + 2}", 1)
                        for k, i in enumerate(ids)]
        return ids

    def terminate(self, node_id: str) -> None:
        pass

    def nodes(self) -> list[ProviderNode]:
        return list(self.listed)

    def forget(self, node_id: str) -> None:
        pass


def test_the_round_reports_config_once_and_state_with_pending_and_infeasible() -> None:
    head = RayNode("aa" * 28, "127.10.0.2", "idle", 1.0,
                   {"CPU": 2.0, "node:__internal_head__": 1.0}, {"CPU": 2.0}, {})
    worker = RayNode("bb" * 28, "127.10.1.9", "running", 0.0, {"CPU": 1.5}, {"CPU": 1.5},
                     {NODE_LABEL: "gone"})
    observer = Recorder([head, worker])
    loop = Autoscaler(spec(), Provider(), observer, head_ip="127.10.0.2", events=EventLog(None))
    for _ in range(3):
        loop.tick()
    assert len(observer.configs) == 1, "the config is sent again only when it changes"
    head_group, w = observer.configs[0]
    assert head_group == NodeGroup(HEAD_GROUP, {"CPU": 2.0}, 1, 1)  # what its Ray node has
    assert (w.name, w.min, w.max) == ("w", 1, 4)
    assert w.resources == spec().worker_groups[0].ray_resources
    report, observed = observer.states[-1]
    assert observed == 42
    assert [(p.id, p.group) for p in report.pending] == [("w-0", "w")]  # the min launched
    assert report.infeasible.tasks == [Shape(resources={"GPU": 1.0}, count=1)]
    # round 1 launched (seen pending from round 2 on); round 3 changed nothing
    assert len(observer.states) == 2, "an unchanged state is not sent every round"

    loop.spec = spec(max_replicas=None)
    loop.tick()
    assert len(observer.configs) == 2 and observer.configs[-1][1].max is None
    loop.spec = spec(suspend=True)
    loop.tick()
    assert (observer.configs[-1][1].min, observer.configs[-1][1].max) == (0, 0)


def test_a_failing_report_never_stops_the_round() -> None:
    class Broken(Recorder):
        def report_cluster_config(self, groups: list[NodeGroup]) -> None:
            raise RuntimeError("GCS gone")

    loop = Autoscaler(spec(), Provider(), Broken([]), head_ip="127.10.0.2",
                      events=EventLog(None))
    assert loop.tick().launch == {"w": 1}
