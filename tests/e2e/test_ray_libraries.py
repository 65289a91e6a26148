"""Ray's own tools and libraries on a local cluster: `ray status`, Ray Data, Train and Tune.

They read what an autoscaler reports to Ray's GCS (the cluster config and the
autoscaling state, observe/gcs_report.py) as they do under Ray's autoscaler.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rayscale.local.provider import ray_executable
from tests.e2e.conftest import Cluster, cluster_spec, wait_for, worker_group

pytestmark = pytest.mark.e2e


def ray_status(cluster: Cluster) -> str:
    address = cluster.dir.load().address
    out = subprocess.run([ray_executable(), "status", "--address", address],
                         env=cluster.driver_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def watch_peak(cluster: Cluster, group: str) -> tuple[threading.Event, list[int]]:
    """Follow the group's node count (running + pending) in a thread until the event is set."""
    stop, seen = threading.Event(), [0]

    def follow() -> None:
        while not stop.is_set():
            try:
                g = cluster.group(group)
                seen.append(g["running"] + g["pending"])
            except Exception:
                pass
            time.sleep(0.5)

    threading.Thread(target=follow, daemon=True).start()
    return stop, seen


def test_ray_status_shows_pending_nodes_and_infeasible_demand(start_cluster: Any) -> None:
    # nodes with a `ray start` of their own (about 5 s to register): a forked node
    # registers within ~1.5 s, less than one `ray status` (a Python that imports Ray)
    # takes, so the pending state would come and go between two looks
    cluster = start_cluster(cluster_spec("rstatus", [worker_group("w", max_replicas=2)]),
                            RAYSCALE_ZYGOTE="off")
    driver = cluster.driver("""
        import ray, time
        import ray._private.state as state
        config = state.state.get_cluster_config()
        print("GROUPS", sorted((g.name, g.min_count, g.max_count, dict(g.resources).get("CPU", 0))
                               for g in config.node_group_configs), flush=True)
        @ray.remote(num_cpus=1)
        def work():
            time.sleep(20)
        @ray.remote(num_cpus=64)
        def huge():
            pass
        refs = [work.remote() for _ in range(2)]
        never = huge.remote()
        ray.get(refs)
        ray.cancel(never)
        print("DONE", flush=True)
    """)
    try:
        # while the two workers start, Ray's own `ray status` lists them as pending
        pending = wait_for(lambda: (s := ray_status(cluster)) and "w, starting ray" in s and s,
                           60, "pending nodes in ray status", every=0.2)
        assert "Pending:\n w-" in pending
        # the 64-CPU task no group can hold: Ray's demand line, and the autoscaling
        # state carries it as infeasible (the GCS warns drivers from it)
        wait_for(lambda: "{'CPU': 64.0}: 1+ pending tasks/actors" in ray_status(cluster), 30,
                 "the infeasible task in ray status")
        infeasible = wait_for(lambda: _infeasible(cluster), 30, "the infeasible report")
        assert infeasible == [{"CPU": 64.0}]
        # Ray's dashboard shows the same status (its "Cluster Status" reads the same report)
        shown = wait_for(lambda: (t := _dashboard_status(cluster)) and "Pending:" in t and t, 30,
                         "the dashboard's cluster status")
        assert "{'CPU': 64.0}: 1+ pending tasks/actors" in shown
        running = wait_for(lambda: (s := ray_status(cluster)) and "Active:\n 2 w" in s and s, 60,
                           "two active w nodes")
        assert "(no pending nodes)" in running
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, err[-3000:]
    assert "GROUPS [('headgroup', 1, 1, 0), ('w', 0, 2, 1)]" in out
    assert "DONE" in out


def _dashboard_status(cluster: Cluster) -> str:
    """The dashboard's formatted cluster status (what its overview page shows)."""
    import httpx2 as httpx

    from rayscale import rayauth

    record = cluster.dir.load()
    reply = httpx.get(f"{record.dashboard_url}/api/cluster_status", params={"format": "1"},
                      headers=rayauth.bearer_headers(record.token_file), timeout=30)
    reply.raise_for_status()
    return str(reply.json()["data"]["clusterStatus"])


def _infeasible(cluster: Cluster) -> list[dict[str, float]]:
    from ray.core.generated import autoscaler_pb2 as pb

    observer = cluster.observer()
    reply = pb.GetClusterStatusReply.FromString(observer.gcs.get_cluster_status())
    return [dict(r.resources_bundle) for r in reply.autoscaling_state.infeasible_resource_requests]


DATA_PIPELINE = """
    import time, ray
    def double(batch):
        time.sleep(1.0)
        batch["id"] = batch["id"] * 2
        return batch
    started = time.time()
    ds = ray.data.range({rows}, override_num_blocks={blocks})
    total = ds.map_batches(double, num_cpus=1, batch_size=None).sum("id")
    print("SUM", total, "took", round(time.time() - started, 1))
"""


def test_ray_data_scales_from_zero_to_max_and_back(start_cluster: Any) -> None:
    pytest.importorskip("pandas", reason="ray[data] (rayscale[data]) is not installed")
    cluster = start_cluster(cluster_spec("data", [worker_group("w", max_replicas=3)], idle_s=5))
    assert cluster.group("w")["running"] == 0
    stop, seen = watch_peak(cluster, "w")
    try:
        out = cluster.run_driver(DATA_PIPELINE.format(rows=600, blocks=60), timeout=300)
    finally:
        stop.set()
    assert f"SUM {2 * sum(range(600))} " in out
    assert max(seen) == 3, f"Ray Data asked for and got the max (seen {sorted(set(seen))})"
    wait_for(lambda: cluster.group("w")["running"] + cluster.group("w")["terminating"] == 0, 90,
             "scale down to 0 after the idle timeout")
    assert {e["reason"] for e in cluster.events("stop")} == {"idle"}


def test_ray_train_and_tune_get_their_nodes(start_cluster: Any, tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="ray[train,tune] is not installed")
    cluster = start_cluster(cluster_spec("train", [worker_group("w", max_replicas=4)], idle_s=5))
    stop, seen = watch_peak(cluster, "w")
    try:
        out = cluster.run_driver(f"""
            import ray
            from ray import train, tune
            from ray.train import RunConfig, ScalingConfig
            from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

            def loop(config):
                ctx = train.get_context()
                train.report({{"rank": ctx.get_world_rank(),
                              "node": ray.get_runtime_context().get_node_id()}})

            trainer = DataParallelTrainer(
                loop, scaling_config=ScalingConfig(num_workers=3, use_gpu=False),
                run_config=RunConfig(storage_path={str(tmp_path / "train")!r}, name="t"),
            )
            result = trainer.fit()
            print("TRAIN", result.error is None, flush=True)

            def trial(config):
                tune.report({{"score": config["x"] * 2}})

            tuner = tune.Tuner(
                tune.with_resources(trial, {{"cpu": 1}}),
                param_space={{"x": tune.grid_search(list(range(8)))}},
                run_config=tune.RunConfig(storage_path={str(tmp_path / "tune")!r}, name="u"),
            )
            results = tuner.fit()
            scores = sorted(r.metrics["score"] for r in results)
            print("TUNE", len(results), results.num_errors, scores, flush=True)
        """, timeout=400)
    finally:
        stop.set()
    assert "TRAIN True" in out
    assert f"TUNE 8 0 {[x * 2 for x in range(8)]}" in out
    assert 3 <= max(seen) <= 4, f"the 3 training workers got nodes (seen {sorted(set(seen))})"


SERVE_APP = """
    import asyncio, time
    import ray
    from ray import serve
    from ray.serve.config import ProxyLocation

    # no HTTP proxy: requests go through a handle, so nothing listens on a port
    serve.start(proxy_location=ProxyLocation.Disabled)

    @serve.deployment(
        ray_actor_options={"num_cpus": 1},
        autoscaling_config={
            "min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1,
            "upscale_delay_s": 1, "downscale_delay_s": 3,
            "metrics_interval_s": 0.5, "look_back_period_s": 2,
        },
    )
    class Slow:
        async def __call__(self, i):
            await asyncio.sleep(1.5)
            return ray.get_runtime_context().get_node_id()

    handle = serve.run(Slow.bind(), name="slow", route_prefix=None)
    nodes, answered, deadline = set(), 0, time.time() + 150
    while len(nodes) < 3 and time.time() < deadline:
        for answer in [handle.remote(i) for i in range(12)]:
            nodes.add(answer.result(timeout_s=120))
            answered += 1
    print("SERVED", answered, "NODES", len(nodes), flush=True)
    serve.delete("slow")
    serve.shutdown()
"""


def test_serve_autoscaling_replicas_get_their_nodes(start_cluster: Any) -> None:
    pytest.importorskip("fastapi", reason="ray[serve] (rayscale[serve]) is not installed")
    cluster = start_cluster(cluster_spec("serve", [worker_group("w", max_replicas=3)], idle_s=5))
    stop, seen = watch_peak(cluster, "w")
    try:
        out = cluster.run_driver(SERVE_APP, timeout=300)
    finally:
        stop.set()
    assert "NODES 3" in out, f"Serve's 3 replicas ran on 3 nodes: {out[-2000:]}"
    assert max(seen) == 3
    wait_for(lambda: cluster.group("w")["running"] + cluster.group("w")["terminating"] == 0, 90,
             "scale down to 0 once Serve is shut down")
