"""The planner with and without quotas: the cost of quota headroom per decision.

The scenario of ``planner_vs_ray.py`` (1000 nodes, 10,000 pending requests of 20
shapes, 2 gangs) with 5 and with 100 groups, planned as it is and again with a
namespace quota of four keys (every group's node costs 1 cpu, 2 memory, 1 pod and
0.5 gpu; the quota leaves 500 cpu, 10,000 memory, 400 pods, 1000 gpu: pods bind).
Prints the median of ``--repeat`` plans per case and the nodes launched.

    .venv/bin/python bench/planner_quotas.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.planner_vs_ray import cluster_state, make_scenario
from rayscale.planner.core import plan
from rayscale.planner.state import ClusterState

COST = {"cpu": 1, "memory": 2, "pods": 1, "gpu": 0.5}
LEFT = {"cpu": 500, "memory": 10000, "pods": 400, "gpu": 1000}


def with_quota(doc: dict[str, Any]) -> dict[str, Any]:
    groups = {name: {**g, "cost": COST} for name, g in doc["groups"].items()}
    return {**doc, "groups": groups, "quotas": [{"name": "team/compute", "left": LEFT}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for groups in (5, 100):
        scenario = argparse.Namespace(nodes=1000, groups=groups, requests=10000, shapes=20,
                                      gangs=2, seed=0)
        doc = cluster_state(make_scenario(scenario))
        for label, state_doc in (("no quota", doc), ("quota, 4 keys", with_quota(doc))):
            state = ClusterState.model_validate(state_doc)
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                decision = plan(state)
                times.append(time.perf_counter() - started)
            print(f"{groups:>3} groups, {label:<13}: {statistics.median(times) * 1000:6.1f} ms, "
                  f"{sum(decision.launch.values())} nodes launched")


if __name__ == "__main__":
    main()
