"""The hold after a GCS outage (autoscaler/headwatch.py), and the loop honouring it."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.headwatch import HeadWatch
from rayscale.autoscaler.loop import Autoscaler, LoopOptions
from rayscale.labels import NODE_LABEL
from rayscale.observe.ray_state import Observation, RayNode
from rayscale.planner.state import Shape
from rayscale.providers.base import ProviderNode
from rayscale.spec import parse_cluster_spec


def test_up_by_default_and_a_good_round_says_nothing() -> None:
    watch = HeadWatch(grace_s=60, settle_s=10)
    assert not watch.holding and watch.state == "up"
    assert watch.reachable(0.0, unregistered=3) is None
    assert not watch.holding


def test_unreachable_holds_and_is_announced_once() -> None:
    watch = HeadWatch(grace_s=60, settle_s=10)
    first = watch.unreachable(100.0, "RpcError")
    assert first is not None and first.kind == "gcs_unreachable" and "RpcError" in first.message
    assert watch.holding and watch.state == "down" and watch.outages == 1
    assert watch.unreachable(101.0, "RpcError") is None
    assert watch.outages == 1


def test_back_holds_for_settle_time_even_when_every_node_looks_registered() -> None:
    # a restarted GCS shows the nodes read back from its store as alive at once
    watch = HeadWatch(grace_s=60, settle_s=10)
    watch.unreachable(100.0, "x")
    back = watch.reachable(103.0, unregistered=0)
    assert back is not None and back.kind == "gcs_back" and "3.0s" in back.message
    assert watch.holding and watch.state == "recovering" and watch.down_for == 3.0
    assert watch.reachable(112.0, unregistered=0) is None and watch.holding
    end = watch.reachable(113.0, unregistered=0)
    assert end is not None and end.kind == "hold_end" and not watch.holding


def test_back_holds_until_live_nodes_reregister() -> None:
    watch = HeadWatch(grace_s=60, settle_s=10)
    watch.unreachable(0.0, "x")
    back = watch.reachable(5.0, unregistered=2)
    assert back is not None and "2 live node(s)" in back.message
    assert watch.reachable(20.0, unregistered=1) is None and watch.holding
    end = watch.reachable(21.0, unregistered=0)
    assert end is not None and end.kind == "hold_end" and "every live node" in end.message
    assert not watch.holding


def test_hold_ends_after_grace_even_if_nodes_never_come_back() -> None:
    watch = HeadWatch(grace_s=30, settle_s=10)
    watch.unreachable(0.0, "x")
    watch.reachable(1.0, unregistered=1)
    assert watch.reachable(30.9, unregistered=1) is None
    end = watch.reachable(31.0, unregistered=1)
    assert end is not None and end.kind == "hold_end" and "did not re-register" in end.message
    assert not watch.holding


def test_an_outage_during_recovery_starts_over() -> None:
    watch = HeadWatch(grace_s=60, settle_s=10)
    watch.unreachable(0.0, "x")
    watch.reachable(1.0, unregistered=1)
    again = watch.unreachable(2.0, "x")
    assert again is not None and watch.state == "down" and watch.outages == 2
    watch.reachable(4.0, unregistered=0)
    assert watch.state == "recovering" and watch.since == 4.0


def test_settle_never_exceeds_grace() -> None:
    watch = HeadWatch(grace_s=5, settle_s=10)
    watch.unreachable(0.0, "x")
    watch.reachable(1.0, unregistered=0)
    assert watch.reachable(6.0, unregistered=0) is not None and not watch.holding


# ------------------------------------------------------------ the loop, with fakes



HEAD = RayNode("aa" * 28, "127.10.0.2", "idle", 1.0, {"CPU": 0.0}, {}, {})
WORKER = RayNode("bb" * 28, "127.10.1.2", "idle", 1000.0, {"CPU": 1.0}, {"CPU": 1.0},
                 {NODE_LABEL: "w-0"})


def _spec() -> Any:
    return parse_cluster_spec({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
        "spec": {
            "autoscalerOptions": {"idleTimeoutSeconds": 1},
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": {"spec": {"containers": [{"name": "h"}]}}},
            "workerGroupSpecs": [{
                "groupName": "w", "minReplicas": 0, "maxReplicas": 4,
                "template": {"spec": {"containers": [{"name": "w", "resources": {
                    "limits": {"cpu": "1", "memory": "1Gi"}}}]}},
            }],
        },
    })


class Scripted:
    """An observer whose next answer the test sets: an Observation or an exception."""

    def __init__(self) -> None:
        self.next: Observation | Exception = Observation(nodes=[HEAD, WORKER])
        self.drained: list[str] = []

    def observe(self) -> Observation:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]:
        self.drained.append(node_id)
        return True, ""


class Provider:
    def __init__(self) -> None:
        # launched long ago: an unregistered node of ours would count as a timed-out launch
        self.listed = [ProviderNode("w-0", "w", "started", time.time() - 1000, "127.10.1.2", 1)]
        self.launched: list[str] = []
        self.terminated: list[str] = []

    def launch(self, group: str, count: int) -> list[str]:
        ids = [f"{group}-new{k}" for k in range(count)]
        self.launched += ids
        return ids

    def terminate(self, node_id: str) -> None:
        self.terminated.append(node_id)

    def nodes(self) -> list[ProviderNode]:
        return list(self.listed)

    def forget(self, node_id: str) -> None:
        pass


def test_the_loop_stops_and_launches_nothing_while_the_gcs_is_gone_or_settling() -> None:
    observer, provider, events = Scripted(), Provider(), EventLog(None)
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2", events=events,
                      options=LoopOptions(recovery_grace_s=60, recovery_settle_s=60))
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running", idle_s=0.0)])
    loop.tick()  # w-0 registered, busy
    tracked = loop.tracker.get("w-0")
    assert tracked is not None and tracked.registered

    observer.next = RuntimeError("GCS gone")
    for _ in range(3):
        loop.tick()
    assert [e.kind for e in events.recent].count("gcs_unreachable") == 1
    assert loop.head.state == "down"
    assert loop.metrics.gcs_reachable._value.get() == 0  # type: ignore[attr-defined]

    # the restarted GCS: w-0 not registered yet (it looks like a launch long timed
    # out), demand for 2 CPUs unserved
    observer.next = Observation(nodes=[HEAD], tasks=[Shape(resources={"CPU": 1.0}, count=2)])
    loop.tick()
    loop.tick()
    # then w-0 back, idle for long
    observer.next = Observation(nodes=[HEAD, WORKER])
    loop.tick()
    assert (provider.launched, provider.terminated, observer.drained) == ([], [], [])
    kinds = [e.kind for e in events.recent]
    assert "gcs_back" in kinds and not {"stop", "launch", "launch_failed", "lost"} & set(kinds)
    assert loop.head.holding

    loop.head.settle_s = 0.0  # settled: the idle node is drained and stopped as usual
    loop.tick()
    loop.close()
    assert "hold_end" in [e.kind for e in events.recent]
    assert observer.drained == [WORKER.node_id] and provider.terminated == ["w-0"]


def test_without_the_hold_the_same_picture_would_stop_the_node() -> None:
    """The counterfactual: an unregistered node of ours launched long ago is a failed launch."""
    observer, provider, events = Scripted(), Provider(), EventLog(None)
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2", events=events)
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running", idle_s=0.0)])
    loop.tick()  # w-0 registered, busy; then the GCS restarts between two rounds
    observer.next = Observation(nodes=[HEAD], tasks=[Shape(resources={"CPU": 1.0}, count=2)])
    loop.tick()
    loop.close()
    kinds = [e.kind for e in events.recent]
    assert "launch_failed" in kinds and "stop" in kinds


def test_a_starting_autoscaler_holds_for_running_nodes_ray_does_not_show_yet() -> None:
    """A replaced head's sidecar starts with it: its first picture is after an outage."""
    observer, provider, events = Scripted(), Provider(), EventLog(None)
    # a settle time applies after an outage, not to the start's hold
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2", events=events,
                      options=LoopOptions(recovery_grace_s=60, recovery_settle_s=30))
    observer.next = Observation(nodes=[HEAD], tasks=[Shape(resources={"CPU": 1.0}, count=2)])
    loop.tick()
    loop.tick()
    assert loop.head.holding
    assert (provider.launched, provider.terminated, observer.drained) == ([], [], [])
    kinds = [e.kind for e in events.recent]
    assert kinds.count("start_hold") == 1 and not {"launch_failed", "stop", "launch"} & set(kinds)
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running", idle_s=0.0)],
                                tasks=[Shape(resources={"CPU": 1.0}, count=2)])
    loop.tick()  # w-0 re-registered: the hold ends and the demand is served
    loop.close()
    assert not loop.head.holding and "hold_end" in [e.kind for e in events.recent]
    assert len(provider.launched) == 1


def test_a_starting_autoscaler_with_every_node_registered_does_not_hold() -> None:
    observer, provider, events = Scripted(), Provider(), EventLog(None)
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2", events=events)
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running", idle_s=0.0)],
                                tasks=[Shape(resources={"CPU": 1.0}, count=2)])
    loop.tick()
    loop.close()
    assert not loop.head.holding and len(provider.launched) == 1
    assert "start_hold" not in [e.kind for e in events.recent]


