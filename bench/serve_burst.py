"""A Serve burst on a local rayscale cluster: requests served and failed, and the time
from the burst to a new worker's replica serving.

One local cluster from a RayService file (`rayscale up`): a head with 0 CPUs and up to
``--workers`` workers of 1 CPU, idle timeout 5 s. The application ``busy``
(tests/e2e/serve_app, shipped as its working_dir) answers each request after 0.5 s; its
deployment autoscales 1..4 replicas of 1 CPU each (``target_ongoing_requests: 1``), so
every replica past the first needs a worker rayscale launches. A closed-loop burst of
``--clients`` clients runs until a replica on a new worker has answered (at least
``--burst-s``), then a light load of 1 request a second runs through the scale-down.

Printed: requests answered and failed in the burst and after, answers per second, when
(after the burst began) rayscale launched a worker, Ray registered it, its replica first
answered, and the idle worker was stopped.

    .venv/bin/python bench/serve_burst.py            # ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rayscale import procs, rayauth
from tests.e2e.conftest import Cluster, wait_for
from tests.e2e.test_local_serve import BUSY_APP, SERVICE, Load, service_doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst-s", type=float, default=15.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="serve-burst-"))
    env = {**os.environ, "RAYSCALE_HOME": str(root / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in rayauth.AUTH_ENV_VARS:
        env.pop(name, None)
    cluster = Cluster(SERVICE, env, root / "home")
    path = root / "svc.yaml"
    path.write_text(yaml.safe_dump(service_doc(SERVICE, [BUSY_APP])))
    marker = ""
    try:
        up = cluster.cli("up", str(path), timeout=480)
        marker = cluster.dir.load().id
        lines = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        url = lines["SERVE_HTTP_ADDRESS"] + "/busy"
        first = Load(url, rate=1, seconds=5).start()
        wait_for(lambda: first.ok > 0, 60, "the first replica answering")
        first.stop()
        first_node = first.replies[0][2]["node"]
        began = time.time()
        burst = Load(url, rate=1000, seconds=120, clients=args.clients).start()
        wait_for(lambda: burst.elapsed >= args.burst_s and any(
            r["node"] != first_node for _, _, r in list(burst.replies)), 120,
            "a replica on a new worker answering")
        burst.stop()
        light = Load(url, rate=1, seconds=120).start()
        wait_for(lambda: any(e["kind"] == "stop" for e in cluster.events()
                             if e["ts"] >= began), 110, "an idle worker stopped")
        light.stop()
        events = [e for e in cluster.events() if e["ts"] >= began
                  and e["kind"] in ("launch", "registered", "stop")]
        took = max(done for _, done, _ in burst.replies)
        new = min(done for _, done, r in burst.replies if r["node"] != first_node)
        figures = {
            "burst_ok": burst.ok, "burst_failed": len(burst.failures),
            "burst_answers_per_s": round(burst.ok / took, 2),
            "light_ok": light.ok, "light_failed": len(light.failures),
            "new_replica_first_answer_s": round(new, 1),
            "events": [f"{e['kind']} +{e['ts'] - began:.1f} s" for e in events],
        }
        print(json.dumps(figures) if args.json else "\n".join(
            f"{k}: {v}" for k, v in figures.items()))
    finally:
        cluster.cli("down", SERVICE, check=False, timeout=180)
        if marker:
            procs.stop_pids(procs.pids_with_marker(marker))


if __name__ == "__main__":
    main()
