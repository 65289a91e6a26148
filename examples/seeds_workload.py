"""The seed docs' workload: tasks of 1 CPU each, more than one worker can hold.

The head has num-cpus 0, so every task waits for a worker: the autoscaler adds
workers until the demand fits (or the group's max), and removes them after
the idle timeout once the work is done.

    rayscale submit raycluster-autoscaler -- python examples/seeds_workload.py
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter

import ray

TASKS = int(os.environ.get("SEEDS_TASKS", "8"))
SECONDS = float(os.environ.get("SEEDS_TASK_SECONDS", "10"))


@ray.remote(num_cpus=1)
def get_task_hostname(seconds: float) -> str:
    time.sleep(seconds)
    node = ray.get_runtime_context().get_node_id()[:8]
    return f"{socket.gethostname()}/{node}"


def main() -> int:
    if os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        # under `rayscale submit` Ray sets RAY_ADDRESS; run directly, use rayscale's env
        from rayscale.driver import connect

        connect()
    started = time.time()
    refs = [get_task_hostname.remote(SECONDS) for _ in range(TASKS)]
    results = ray.get(refs)
    per_node = Counter(results)
    print(f"{len(results)} tasks done in {time.time() - started:.1f}s on {len(per_node)} nodes:")
    for node, n in sorted(per_node.items()):
        print(f"  {node}: {n} task(s)")
    return 0 if len(results) == TASKS else 1


if __name__ == "__main__":
    sys.exit(main())
