"""Local clusters end to end: real `ray start` workers coming and going with demand."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from rayscale import procs
from tests.e2e.conftest import Cluster, cluster_spec, wait_for, worker_group

pytestmark = pytest.mark.e2e


def _watch_max(cluster: Cluster, group: str, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        try:
            g = cluster.group(group)
            seen.append(g["running"] + g["pending"] + g["terminating"])
        except Exception:
            pass
        time.sleep(0.5)


def test_seeds_scenario_scales_to_max_and_back_to_min(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("seeds", [worker_group("small-group", max_replicas=3)]))
    assert cluster.group("small-group")["running"] == 0
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch_max, args=(cluster, "small-group", stop, seen))
    watcher.start()
    try:
        out = cluster.run_driver("""
            import ray, time
            @ray.remote(num_cpus=1)
            def work(i):
                time.sleep(6)
                return ray.get_runtime_context().get_node_id()
            nodes = ray.get([work.remote(i) for i in range(5)])
            print("NODES", len(set(nodes)))
        """)
    finally:
        stop.set()
        watcher.join()
    assert "NODES 3" in out  # 5 one-CPU tasks on 3 one-CPU workers (the max)
    assert max(seen) == 3, "scaled up to the max"
    launches = cluster.events("launch")
    assert launches and all("small-group" in e["message"] for e in launches)
    # after the idle timeout (5 s) every worker drains and stops: back to min 0
    wait_for(lambda: cluster.group("small-group")["running"] == 0
             and cluster.group("small-group")["terminating"] == 0, 60, "scale down to min")
    stopped = cluster.events("stop")
    assert len(stopped) == 3 and {e["reason"] for e in stopped} == {"idle"}
    assert max(seen) <= 3, "never above max"
    # new demand and each node's arrival were seen between rounds (loop.py's looks):
    # the timer alone would have caught them first about once in ten
    assert _metric(cluster, "rayscale_change_rounds_total") >= 1


def _metric(cluster: Cluster, name: str) -> float:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(cluster.status()["metrics"], timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_min_replicas_are_kept_and_up_waits_for_them(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("mins", [worker_group("w", min_replicas=1)], idle_s=1))
    # `up` returned only once the min worker registered
    assert cluster.group("w")["running"] == 1
    time.sleep(4)  # well past the idle timeout
    assert cluster.group("w")["running"] == 1
    assert not cluster.events("stop")


def test_strict_spread_placement_group_gets_distinct_nodes(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("spread", [worker_group("w", cpu=2, max_replicas=3)]))
    out = cluster.run_driver("""
        import ray
        from ray.util.placement_group import placement_group, placement_group_table
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        ray.get(pg.ready(), timeout=120)
        nodes = placement_group_table(pg)["bundles_to_node_id"]
        print("DISTINCT", len(set(nodes.values())))
    """)
    assert "DISTINCT 2" in out
    # 2-CPU workers could hold both bundles on one: STRICT_SPREAD made it two
    assert len(cluster.events("registered")) == 2
    assert any("gangs" in e["message"] for e in cluster.events("launch"))


def test_request_resources_keeps_nodes_up_until_cleared(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("floor", [worker_group("w", max_replicas=3)], idle_s=2))
    cluster.run_driver("""
        from ray.autoscaler.sdk import request_resources
        request_resources(bundles=[{"CPU": 1}, {"CPU": 1}])
    """)
    wait_for(lambda: cluster.group("w")["running"] == 2, 90, "two workers for the floor")
    time.sleep(6)  # three idle timeouts: the floor keeps them
    assert cluster.group("w")["running"] == 2
    assert not cluster.events("stop")
    cluster.run_driver("""
        from ray.autoscaler.sdk import request_resources
        request_resources(bundles=[])
    """)
    wait_for(lambda: cluster.group("w")["running"] == 0, 60, "scale down once the floor is gone")


def test_busy_node_is_never_stopped_while_others_idle_out(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("busy", [worker_group("w", max_replicas=3)], idle_s=2))
    long_driver = cluster.driver("""
        import ray, time
        @ray.remote(num_cpus=1)
        def task(seconds):
            time.sleep(seconds)
            return ray.get_runtime_context().get_node_id()
        refs = [task.remote(40), task.remote(1), task.remote(1)]
        print("DONE", ray.get(refs, timeout=240)[0])
    """)
    try:
        wait_for(lambda: len(cluster.events("registered")) == 3, 120, "three workers")
        # the two short tasks end; their nodes idle out; the long one keeps its node
        wait_for(lambda: len(cluster.events("stop")) >= 2, 60, "two idle nodes stopped")
        time.sleep(5)
        status = cluster.status()
        assert cluster.group("w")["running"] == 1
        busy = [n for n in status["nodes"] if n["group"] == "w"]
        # Ray itself refuses an idle-termination drain of the busy node: the loop's
        # safety net if a plan ever raced with new work
        observer = cluster.observer()
        accepted, why = observer.drain(busy[0]["ray_node_id"], 10, "test: must be refused")
        assert not accepted and "idle" in why
        out, err = long_driver.communicate(timeout=120)
    finally:
        if long_driver.poll() is None:
            long_driver.kill()
    assert long_driver.returncode == 0, err[-2000:]
    assert "DONE " + busy[0]["ray_node_id"] in out  # the long task finished where it ran
    assert len(cluster.events("stop")) == 2


def test_autoscaler_killed_mid_scale_up_restarts_without_duplicates(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("crash", [worker_group("w", max_replicas=3)], idle_s=60))
    driver = cluster.driver("""
        import ray, time
        @ray.remote(num_cpus=1)
        def task():
            time.sleep(30)
        ray.get([task.remote() for _ in range(3)])
        print("OK")
    """)
    try:
        wait_for(lambda: cluster.events("launch"), 30, "a launch")
        autoscaler = cluster.dir.load().autoscaler_pid
        assert autoscaler is not None
        os.kill(autoscaler, signal.SIGKILL)  # mid scale-up: nodes launched, not registered
        wait_for(lambda: not procs.is_alive(autoscaler), 10, "the autoscaler to die")
        before = {n.id for n in cluster.dir.nodes()}
        assert len(before) == 3
        cluster.cli("resume", cluster.name)
        wait_for(lambda: cluster.group("w")["running"] == 3, 120, "three workers running")
        time.sleep(3)  # a few more rounds: nothing new may be launched
        assert {n.id for n in cluster.dir.nodes()} == before, "no duplicate launched"
        assert cluster.events("adopt")
        # every process of the cluster runs in the session of a recorded node, the head,
        # the autoscaler or its zygote: no orphaned node
        record = cluster.dir.load()
        nodes = {n.pid for n in cluster.dir.nodes()}
        marked = procs.pids_with_marker(cluster.marker)
        # (a node's daemon server and forked log monitor share the zygote's command
        # line, in the node's session)
        zygotes = {p for p in marked if _is_zygote(p) and _session(p) not in nodes}
        assert len(zygotes) <= 1, "the killed autoscaler's zygote exited with it"
        sessions = {_session(p) for p in marked} - {None}
        assert sessions <= nodes | {record.head_pid, record.autoscaler_pid} | zygotes, \
            "no orphan"
        out, err = driver.communicate(timeout=120)
        assert "OK" in out, err[-2000:]
    finally:
        if driver.poll() is None:
            driver.kill()


def _is_zygote(pid: int) -> bool:
    return "rayscale.local.zygote" in procs.cmdline(pid)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:  # gone since it was listed
        return None


def test_failed_launch_backs_off_and_falls_through_to_next_group(start_cluster: Any) -> None:
    broken = worker_group("regular", max_replicas=2, priority=10,
                          # a valid port that `ray start` itself refuses (below 1024)
                          rayStartParams={"min-worker-port": "1000"})
    elastic = worker_group("elastic", max_replicas=2, priority=0)
    cluster = start_cluster(cluster_spec("fallback", [broken, elastic]),
                            RAYSCALE_BACKOFF_S="120")
    out = cluster.run_driver("""
        import ray
        @ray.remote(num_cpus=1)
        def where():
            return ray.get_runtime_context().get_node_labels()["rayscale.io/group"]
        print("GROUPS", sorted(set(ray.get([where.remote() for _ in range(2)]))))
    """)
    assert "GROUPS ['elastic']" in out
    assert cluster.events("launch_failed")[0]["group"] == "regular"
    assert cluster.events("backoff")[0]["group"] == "regular"
    assert cluster.group("regular")["launchable"] is False


def test_down_leaves_no_process(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("downer", [worker_group("w", min_replicas=2)]))
    marker = cluster.marker
    assert len(procs.pids_with_marker(marker)) > 5  # head, autoscaler, workers, agents
    cluster.cli("down", cluster.name)
    assert procs.pids_with_marker(marker) == []
    record = cluster.dir.load()
    assert record.head_pid is None and not cluster.dir.nodes()
    assert not os.path.exists(record.temp_dir)


def test_second_up_of_a_running_name_fails_and_bad_files_start_nothing(
    start_cluster: Any, tmp_path: Any
) -> None:
    cluster = start_cluster(cluster_spec("twice", [worker_group("w")]))
    spec_file = tmp_path / "twice.yaml"
    again = cluster.cli("up", str(spec_file), check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    bad = tmp_path / "bad.yaml"
    spec = cluster_spec("bad", [worker_group("w", max_replicas=1, min_replicas=0)])
    spec["spec"]["workerGroupSpecs"][0]["minReplicas"] = 3
    import yaml

    bad.write_text(yaml.safe_dump(spec))
    result = cluster.cli("up", str(bad), check=False)
    assert result.returncode == 2
    assert "workerGroupSpecs[0].maxReplicas: must be >= minReplicas (1 < 3)" in result.stderr
    assert not (cluster.home / "clusters" / "bad").exists()


def test_metrics_endpoint_serves_rayscale_metrics(start_cluster: Any) -> None:
    import urllib.request

    cluster = start_cluster(cluster_spec("metrics", [worker_group("w", min_replicas=1)]))
    url = cluster.status()["metrics"]
    assert url.startswith("http://127.")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url, timeout=10).read().decode()
    for name in ("rayscale_nodes{", "rayscale_pending_demand{", "rayscale_launches_total{",
                 "rayscale_planner_duration_seconds_bucket", "rayscale_failed_launches"):
        assert name in text, name
    assert 'rayscale_nodes{group="w",state="running"} 1.0' in text


def test_memory_target_adds_a_node_when_physical_memory_runs_high(start_cluster: Any) -> None:
    group = worker_group("mem", min_replicas=1, max_replicas=2, memoryTargetFraction=0.5)
    cluster = start_cluster(cluster_spec("memory", [group], idle_s=60))
    hog = cluster.driver("""
        import ray, time
        @ray.remote(num_cpus=1)
        class Hog:
            def __init__(self):
                self.block = b"\\x01" * (600 * 2**20)  # resident, not lazily zeroed
            def ready(self):
                return len(self.block)
        hog = Hog.remote()
        print("HELD", ray.get(hog.ready.remote()), flush=True)
        time.sleep(90)
    """)
    try:
        wait_for(lambda: any("memory" in e["message"] for e in cluster.events("launch")), 60,
                 "a launch for memory")
        wait_for(lambda: cluster.group("mem")["running"] == 2, 90, "the memory node to register")
        status = cluster.status()
        assert status["plan"]["launch"] == {}, "one node was enough: no runaway launches"
        fractions = [n["memory_used_fraction"] for n in status["nodes"]
                     if n["group"] == "mem" and n["memory_used_fraction"] is not None]
        assert max(fractions) > 0.55
    finally:
        hog.kill()
        hog.communicate()


def test_a_label_selector_launches_only_the_matching_group(start_cluster: Any) -> None:
    # ray.io/ keys are accepted by Ray 2.60's `ray start --labels` (KubeRay's samples use them)
    spot = worker_group("spot", max_replicas=2,
                        labels={"cpu-family": "amd", "ray.io/market-type": "spot"})
    plain = worker_group("plain", max_replicas=2, priority=10)  # preferred, but unlabelled
    spec = cluster_spec("labelled", [spot, plain])
    spec["spec"]["headGroupSpec"]["labels"] = {"ray.io/region": "us-central2"}
    cluster = start_cluster(spec)
    driver = cluster.driver("""
        import ray, time
        @ray.remote(num_cpus=1, label_selector={"ray.io/market-type": "spot",
                                                "cpu-family": "in(amd,intel)"})
        def labels():
            return ray.get_runtime_context().get_node_labels()
        print("LABELS", sorted(ray.get(labels.remote(), timeout=120).items()), flush=True)
        # no group has this label: infeasible, nothing launched for it
        @ray.remote(num_cpus=1, label_selector={"ray.io/market-type": "on-demand"})
        def never():
            pass
        ref = never.remote()
        time.sleep(120)
    """)
    try:
        event = wait_for(lambda: next((e for e in cluster.events("infeasible")
                                       if "on-demand" in e["message"]), None), 150,
                         "the infeasible event naming the selector")
        assert "label_selector" in event["message"]
        reported = wait_for(lambda: _infeasible_selectors(cluster), 30,
                            "the infeasible request in the GCS, with its selector")
        assert reported == [[("ray.io/market-type", ["on-demand"])]]
    finally:
        driver.kill()
        out, err = driver.communicate()
    (line,) = [x for x in out.splitlines() if x.startswith("LABELS")] or [err[-3000:]]
    for pair in [("cpu-family", "amd"), ("ray.io/market-type", "spot"),
                 ("ray.io/node-group", "spot"), ("rayscale.io/group", "spot"),
                 ("rayscale.io/node", "spot-0")]:
        assert repr(pair) in line, line
    head = next(n for n in cluster.observer().observe().alive()
                if n.labels.get("rayscale.io/group") == "headgroup")
    assert head.labels["ray.io/region"] == "us-central2"
    # only the labelled group launched, once: the preferred plain group never did
    assert [e["group"] for e in cluster.events("launch")] == ["spot"]


def _infeasible_selectors(cluster: Any) -> list[list[tuple[str, list[str]]]]:
    from ray.core.generated import autoscaler_pb2 as pb

    reply = pb.GetClusterStatusReply.FromString(cluster.observer().gcs.get_cluster_status())
    return [[(c.label_key, list(c.label_values)) for s in r.label_selectors
             for c in s.label_constraints]
            for r in reply.autoscaling_state.infeasible_resource_requests]
