"""Benchmark: the cost of one autoscaler round, Ray's GCS reply to a decision.

Times `Autoscaler.tick()` on a synthetic cluster without starting Ray: the
observer is the real `RayObserver` whose one GCS call returns a prebuilt
`ClusterResourceState` protobuf (what Ray's GCS sends), and the provider is a
synthetic in-memory one (named as such; it starts nothing). Drains are
refused, so every round sees the same cluster and does the same work.

    .venv/bin/python bench/loop_round.py --nodes 200 --entries 60 --rounds 300

Prints the median and mean of a round, of the observation (protobuf ->
Observation) alone, and of the rest (join, ClusterState, plan, act, status).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any
from unittest import mock

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler
from rayscale.labels import GROUP_LABEL, NODE_LABEL
from rayscale.observe.ray_state import RayObserver
from rayscale.providers.base import ProviderNode
from rayscale.spec import parse_cluster_spec

HEAD_IP = "127.10.0.2"
GROUPS = [
    ("cpu", {"cpu": "4"}), ("big", {"cpu": "16"}), ("gpu", {"cpu": "8", "nvidia.com/gpu": "1"}),
]


def spec() -> Any:
    def group(name: str, limits: dict[str, str]) -> dict[str, Any]:
        return {"groupName": name, "minReplicas": 0, "maxReplicas": 100000,
                "template": {"spec": {"containers": [{"name": "w",
                                                      "resources": {"limits": limits}}]}}}

    return parse_cluster_spec({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "bench"},
        "spec": {
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": {"spec": {"containers": [{"name": "h"}]}}},
            "workerGroupSpecs": [group(n, lim) for n, lim in GROUPS],
        },
    })


def gcs_state(nodes: int, entries: int) -> Any:
    from ray.core.generated import autoscaler_pb2 as pb

    state = pb.ClusterResourceState()
    head = state.node_states.add(node_id=bytes(28), node_ip_address=HEAD_IP,
                                 status=pb.NodeStatus.Value("RUNNING"))
    head.total_resources["memory"] = 2.0 * 2**30
    for i in range(nodes):
        name, _ = GROUPS[i % len(GROUPS)]
        cpu = {"cpu": 4.0, "big": 16.0, "gpu": 8.0}[name]
        idle = i % 5 == 0
        node = state.node_states.add(
            node_id=(i + 1).to_bytes(28, "big"), node_ip_address=f"127.10.{1 + i // 250}.{i % 250}",
            status=pb.NodeStatus.Value("IDLE" if idle else "RUNNING"),
            idle_duration_ms=30_000 if idle else 0,
        )
        node.total_resources["CPU"] = cpu
        node.total_resources["memory"] = 2.0**30
        node.available_resources["CPU"] = cpu if idle else float(i % 3)
        node.available_resources["memory"] = 2.0**30
        if name == "gpu":
            node.total_resources["GPU"] = 1.0
            node.available_resources["GPU"] = 1.0 if idle else 0.0
        node.labels[GROUP_LABEL] = name
        node.labels[NODE_LABEL] = f"{name}-{i}"
    for k in range(entries):  # Ray: one entry per scheduling class, shapes repeat
        request = state.pending_resource_requests.add(count=1 + k % 4)
        request.request.resources_bundle["CPU"] = float(1 + k % 15 % 4)
        if k % 15 == 7:
            request.request.resources_bundle["GPU"] = 1.0
    gang = state.pending_gang_resource_requests.add(details="PACK")
    for _ in range(2):
        gang.requests.add().resources_bundle["CPU"] = 2.0
    constraint = state.cluster_resource_constraints.add()
    constraint.resource_requests.add(count=2).request.resources_bundle["CPU"] = 1.0
    return state


class SyntheticProvider:
    """In-memory stand-in for a provider (benchmark only): lists fixed nodes, starts nothing."""

    def __init__(self, nodes: int, pending: int) -> None:
        self._nodes = [ProviderNode(f"{GROUPS[i % 3][0]}-{i}", GROUPS[i % 3][0], "started",
                                    time.time(), None, 1000 + i) for i in range(nodes)]
        self._nodes += [ProviderNode(f"cpu-p{i}", "cpu", "started", time.time())
                        for i in range(pending)]

    def launch(self, group: str, count: int) -> list[str]:
        return [f"{group}-new-{k}" for k in range(count)]

    def terminate(self, node_id: str) -> None:
        pass

    def nodes(self) -> list[ProviderNode]:
        return list(self._nodes)

    def forget(self, node_id: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--pending", type=int, default=10)
    parser.add_argument("--entries", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    state = gcs_state(args.nodes, args.entries)
    observer = object.__new__(RayObserver)
    # the GCS's report calls are no-ops here (messages are still built and serialized)
    observer.gcs = mock.Mock(spec=["report_cluster_config", "report_autoscaling_state"])
    observer._version = 0
    observer.drain = lambda node_id, deadline_s, message: (False, "busy")  # type: ignore[method-assign]
    with mock.patch("ray.autoscaler.v2.sdk.get_cluster_resource_state", return_value=state):
        observer.observe()  # imports
        loop = Autoscaler(spec(), SyntheticProvider(args.nodes, args.pending), observer,
                          head_ip=HEAD_IP, events=EventLog(None),
                          on_status=lambda status: None)
        for _ in range(20):
            loop.tick()
        rounds, observes = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            loop.tick()
            rounds.append(time.perf_counter() - started)
            started = time.perf_counter()
            observer.observe()
            observes.append(time.perf_counter() - started)
    plans = loop.metrics.plan_seconds.collect()[0].samples
    plan_sum = next(s.value for s in plans if s.name.endswith("_sum"))
    plan_count = next(s.value for s in plans if s.name.endswith("_count"))
    ms = 1000.0
    print(f"nodes {args.nodes} (+{args.pending} pending), demand entries {args.entries}, "
          f"rounds {args.rounds}")
    print(f"round    median {statistics.median(rounds) * ms:.3f} ms  "
          f"mean {statistics.fmean(rounds) * ms:.3f} ms")
    print(f"observe  median {statistics.median(observes) * ms:.3f} ms  "
          f"mean {statistics.fmean(observes) * ms:.3f} ms")
    kinds: dict[str, int] = {}
    for event in loop.events.recent:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    print(f"events (last {len(loop.events.recent)}): {kinds}")
    print(f"plan     mean {plan_sum / plan_count * ms:.3f} ms (rayscale_planner_duration_seconds)")


if __name__ == "__main__":
    main()
