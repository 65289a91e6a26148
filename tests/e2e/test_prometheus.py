"""A real Prometheus scrapes a local cluster under load through its file_sd file, and
every panel of the autoscaler's Grafana dashboard returns data.

The cluster (Ray's node metrics turned on for it) has a group whose nodes cannot
start (a failed launch, then a backoff) ahead of a group of at most 2 nodes; a
driver asks for four one-CPU tasks (two run, two wait at the max: capped) and
one no group can hold (infeasible). Prometheus (/usr/bin/prometheus, 127.0.0.1,
scrape interval 1 s, temp storage) finds the autoscaler, the dashboard and each
Ray node from ``$RAYSCALE_HOME/prometheus/*.json`` alone. Then each query of
deploy/grafana/rayscale-autoscaler.json, with Grafana's variables filled in (the
cluster's name for ``$cluster``), is sent as Grafana sends it (a range query)
and must return series; the values behind the load are checked too. As the
workers idle out their targets leave the file, and `down` removes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import cluster_spec, wait_for, worker_group
from tests.promfix import Prometheus, file_sd_config, panel_queries, prometheus_server

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).parent.parent.parent / "deploy" / "grafana" / \
    "rayscale-autoscaler.json"

LOAD = """
    import ray, time
    @ray.remote(num_cpus=64)
    def huge():
        return 0
    @ray.remote(num_cpus=1)
    def work(i):
        time.sleep(120)  # until the test ends the driver
    never = huge.remote()  # no group can ever hold it: infeasible while the driver runs
    ray.get([work.remote(i) for i in range(4)])
"""


def _up(prom: Prometheus, job: str, **labels: str) -> int:
    return sum(1 for t in prom.targets() if t["labels"].get("job") == job and t["health"] == "up"
               and all(t["labels"].get(k) == v for k, v in labels.items()))


def _value(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)
    return max((float(r["value"][1]) for r in result), default=0.0)


def test_every_autoscaler_panel_returns_data_from_a_real_prometheus(
        start_cluster: Any, tmp_path: Path) -> None:
    broken = worker_group("broken", max_replicas=2, priority=10,
                          # a valid port that `ray start` itself refuses (below 1024)
                          rayStartParams={"min-worker-port": "1000"})
    small = worker_group("small", max_replicas=2, priority=0)
    cluster = start_cluster(cluster_spec("promtest", [broken, small]),
                            RAYSCALE_BACKOFF_S="300", RAY_enable_metrics_collection="1")
    sd_file = cluster.home / "prometheus" / "promtest.json"
    c = 'ray_io_cluster="promtest"'
    groups = json.loads(sd_file.read_text())  # `up` wrote it
    assert {g["labels"]["job"] for g in groups} == {"rayscale-autoscaler", "ray"}
    assert all(g["labels"]["ray_io_cluster"] == "promtest" for g in groups)

    config = file_sd_config(str(cluster.home / "prometheus" / "*.json"))
    with prometheus_server(tmp_path / "prometheus", config) as prom:
        wait_for(lambda: _up(prom, "rayscale-autoscaler", ray_io_cluster="promtest")
                 and _up(prom, "ray", rayscale_component="dashboard")
                 and _up(prom, "ray", ray_io_group="headgroup"), 60,
                 "Prometheus scraping the autoscaler, the dashboard and the head")
        driver = cluster.driver(LOAD)
        try:
            wait_for(lambda: cluster.group("small")["running"] == 2, 120, "2 small workers")
            wait_for(lambda: _up(prom, "ray", ray_io_group="small") == 2, 60,
                     "both small workers' Ray metrics scraped (the file followed the nodes)")
            wait_for(lambda: _value(prom, 'rayscale_capped_demand{kind="tasks"}') >= 1
                     and _value(prom, 'rayscale_nodes{group="small",state="running"}') == 2,
                     30, "the capped tasks and the nodes in Prometheus")
            time.sleep(4)  # a few more scrapes: every rate() window holds 2+ samples

            board = json.loads(DASHBOARD.read_text())
            empty = []
            queries = panel_queries(board, {"cluster": "promtest", "group": ".*"})
            assert len(queries) >= 20
            for title, ref, expr in queries:
                if not prom.query_range(expr, seconds=60):
                    empty.append(f"{title} [{ref}]: {expr}")
            assert not empty, "panels without data:\n" + "\n".join(empty)
            # the dashboard's variables: Grafana's label_values() is Prometheus's label API
            assert "promtest" in prom.label_values("ray_io_cluster", "rayscale_nodes")
            assert {"small", "broken"} <= set(prom.label_values(
                "group", 'rayscale_nodes{ray_io_cluster=~"promtest"}'))

            # what the panels show is what happened
            assert _value(prom, f'max_over_time(rayscale_infeasible_demand{{{c},kind="tasks"}}'
                                '[5m])') >= 1
            assert _value(prom, f'max_over_time(rayscale_pending_demand{{{c},kind="tasks"}}'
                                '[5m])') >= 1
            assert _value(prom, f'rayscale_failed_launches_total{{{c},group="broken"}}') >= 1
            assert _value(prom, f'rayscale_backoffs_total{{{c},group="broken"}}') == 1
            assert _value(prom, f'rayscale_group_backoff{{{c},group="broken"}}') == 1
            assert _value(prom, f'rayscale_launches_total{{{c},group="small",reason="tasks"}}'
                          ) >= 2
            assert _value(prom, f'rayscale_gcs_reachable{{{c}}}') == 1
            assert _value(prom, f'histogram_quantile(0.99, sum by (le) (rate('
                                f'rayscale_loop_duration_seconds_bucket{{{c}}}[30s])))') > 0
            # Ray's own metrics, from the dashboard and from a worker
            assert prom.query('{job="ray", rayscale_component="dashboard", '
                              'ray_io_cluster="promtest"}')
            assert prom.query('{job="ray", ray_io_group="small"}')
        finally:
            driver.terminate()  # our child: its tasks end with it
            driver.communicate(timeout=60)

        # the workers idle out: their targets leave the file, Prometheus drops them
        wait_for(lambda: '"small"' not in sd_file.read_text(), 90,
                 "the stopped workers' targets gone from the file")
        stops = [e for e in cluster.events("stop") if e["group"] == "small"]
        reasons = {e["reason"] for e in stops}
        try:
            assert stops, "no stop of a small worker"
            for reason in reasons:  # as many as the event log says, reason by reason
                count = sum(1 for e in stops if e["reason"] == reason)
                wait_for(lambda r=reason, n=count: _value(
                    prom, f'rayscale_terminations_total{{{c},group="small",reason="{r}"}}'
                ) == n, 30, f"{count} {reason} stop(s) counted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nevents: {cluster.events()}") from None
        wait_for(lambda: not _up(prom, "ray", ray_io_group="small"), 30,
                 "Prometheus no longer scraping the stopped workers")
    cluster.cli("down", cluster.name)
    assert not sd_file.exists()
