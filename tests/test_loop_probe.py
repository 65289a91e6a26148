"""Rounds between rounds: a cheap look at Ray's demand and nodes starts a round at once.

``change_key`` is checked on Ray's own protobuf messages (autoscaler.proto);
the loop's use of it on a scripted observer whose ``changed()`` the test sets.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler, ChangeProbe, LoopOptions
from rayscale.observe.ray_state import Observation, RayObserver, change_key
from rayscale.spec import parse_cluster_spec


def _state(requests: list[dict[str, float]], nodes: list[tuple[bytes, str, int]]) -> Any:
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.ClusterResourceState()
    for request in requests:
        entry = state.pending_resource_requests.add(count=1)
        for name, amount in request.items():
            entry.request.resources_bundle[name] = amount
    for node_id, status, idle_ms in nodes:
        node = state.node_states.add(node_id=node_id, node_ip_address="127.10.1.2",
                                     status=pb.NodeStatus.Value(status), idle_duration_ms=idle_ms)
        node.available_resources["CPU"] = 1.0 if status == "IDLE" else 0.0
    return state


def test_idle_times_and_busy_or_idle_do_not_count_as_a_change() -> None:
    before = _state([{"CPU": 1.0}], [(b"a" * 28, "IDLE", 1000)])
    after = _state([{"CPU": 1.0}], [(b"a" * 28, "RUNNING", 0)])
    later = _state([{"CPU": 1.0}], [(b"a" * 28, "IDLE", 9000)])
    assert change_key(before) == change_key(after) == change_key(later)


def test_new_demand_a_new_node_or_a_draining_one_is_a_change() -> None:
    base = change_key(_state([{"CPU": 1.0}], [(b"a" * 28, "IDLE", 0)]))
    assert change_key(_state([{"CPU": 1.0}, {"CPU": 2.0}], [(b"a" * 28, "IDLE", 0)])) != base
    assert change_key(_state([{"CPU": 1.0}, {"GPU": 1.0}], [(b"a" * 28, "IDLE", 0)])) != base
    assert change_key(_state([], [(b"a" * 28, "IDLE", 0)])) != base
    assert change_key(_state([{"CPU": 1.0}],
                             [(b"a" * 28, "IDLE", 0), (b"b" * 28, "IDLE", 0)])) != base
    assert change_key(_state([{"CPU": 1.0}], [(b"a" * 28, "DRAINING", 0)])) != base
    assert change_key(_state([{"CPU": 1.0}], [(b"a" * 28, "DEAD", 0)])) != base


def test_ray_observer_is_a_change_probe() -> None:
    assert issubclass(RayObserver, ChangeProbe)


class _Probed:
    """An observer that counts observations and answers ``changed()`` as the test says."""

    def __init__(self) -> None:
        self.observed = 0
        self.change: bool | Exception = False
        self.looks = 0

    def observe(self) -> Observation:
        self.observed += 1
        return Observation(nodes=[])

    def changed(self) -> bool:
        self.looks += 1
        if isinstance(self.change, Exception):
            raise self.change
        changed, self.change = self.change, False
        return changed

    def drain(self, node_id: str, deadline_s: float, message: str) -> tuple[bool, str]:
        return False, "not in this test"


class _NoNodes:
    def launch(self, group: str, count: int) -> list[str]:
        raise AssertionError("nothing to launch here")

    def terminate(self, node_id: str) -> None:
        raise AssertionError("nothing to stop here")

    def nodes(self) -> list[Any]:
        return []

    def forget(self, node_id: str) -> None:
        pass


def _spec() -> Any:
    return parse_cluster_spec({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "probe"},
        "spec": {"headGroupSpec": {"template": {"spec": {"containers": [{"name": "h"}]}}},
                 "workerGroupSpecs": []},
    })


def _wait(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_change_found_between_rounds_starts_a_round_and_nothing_else_does() -> None:
    observer = _Probed()
    # rounds an hour apart: any round after the first is one a look started
    loop = Autoscaler(_spec(), _NoNodes(), observer, head_ip="127.10.0.2",
                      events=EventLog(None), options=LoopOptions(tick_s=3600, probe_s=0.01))
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        assert _wait(lambda: observer.observed == 1 and observer.looks >= 20)
        assert observer.observed == 1, "no change: no round"
        observer.change = RuntimeError("GCS gone")  # a failing look waits for the timer
        looks = observer.looks
        assert _wait(lambda: observer.looks >= looks + 20)
        assert observer.observed == 1
        observer.change = True
        assert _wait(lambda: observer.observed == 2)
        assert loop.metrics.change_rounds._value.get() == 1  # type: ignore[attr-defined]
    finally:
        loop.close()
        runner.join(10)
    assert not runner.is_alive()


def test_without_looks_rounds_follow_the_tick() -> None:
    observer = _Probed()
    observer.change = True  # would start rounds, but looks are off
    loop = Autoscaler(_spec(), _NoNodes(), observer, head_ip="127.10.0.2",
                      events=EventLog(None), options=LoopOptions(tick_s=0.02, probe_s=0))
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        assert _wait(lambda: observer.observed >= 5)
        assert observer.looks == 0
    finally:
        loop.close()
        runner.join(10)
