"""History end to end: a real local cluster scales up and down for a RayJob, is shut
down, and its timeline (store, restarted UI, headless Chromium) matches its events.jsonl;
the job and its log are there too."""

from __future__ import annotations

import shlex
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale.history.store import HistoryStore
from tests.e2e.conftest import cluster_spec, wait_for, worker_group
from tests.uibrowser import ARTIFACTS, CHROMIUM, open_timeline, serve_ui

pytestmark = pytest.mark.e2e


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return str(response.read().decode())


def test_finished_clusters_timeline_matches_its_event_log(start_cluster: Any) -> None:
    cluster = start_cluster(cluster_spec("hist", [worker_group("small", max_replicas=2)],
                                         idle_s=2))
    # the script, as a RayJob on the cluster: two one-CPU tasks at once -> two workers;
    # then idle -> both stop
    code = ("import ray, time\nray.init()\n@ray.remote(num_cpus=1)\ndef work():\n"
            "    time.sleep(3)\nray.get([work.remote() for _ in range(2)])\n"
            "print('HISTORY-JOB-MARKER')\n")
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "hist-job"},
           "spec": {"entrypoint": shlex.join([sys.executable, "-c", code]),
                    "clusterSelector": {"ray.io/cluster": "hist"}}}
    job_file = cluster.home.parent / "hist-job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    submitted = cluster.cli("job", "submit", str(job_file), timeout=180, check=False)
    assert submitted.returncode == 0, submitted.stderr
    with serve_ui(cluster.home / "history.sqlite3", env=cluster.env) as ui:  # while it lives
        store = HistoryStore(cluster.home / "history.sqlite3", readonly=True)
        [live] = store.clusters()
        store.close()
        page = _get(f"{ui.url}/clusters/{live.id}")
        assert 'class="state-running" id="state">running<' in page
        assert f'id="ray-dashboard" href="{cluster.dir.load().dashboard_url}"' in page
    wait_for(lambda: len(cluster.events("stop")) == 2 and
             cluster.group("small")["running"] + cluster.group("small")["terminating"] == 0,
             60, "both workers stopped after idling")
    uid = cluster.marker
    down = cluster.cli("down", cluster.name, timeout=180)
    assert down.returncode == 0
    logged = cluster.events()
    launches = [e for e in logged if e["kind"] == "launch"]
    stops = [e for e in logged if e["kind"] == "stop"]
    assert launches and len(stops) == 2

    history = cluster.home / "history.sqlite3"
    store = HistoryStore(history, readonly=True)
    [row] = store.clusters()
    assert (row.uid, row.name, row.mode) == (uid, "hist", "local")
    assert row.gone is not None, "down marked it finished"
    timeline = store.timeline(row.id)
    assert [(e.ts, e.kind, e.message, e.group, e.node, e.reason) for e in timeline.events] == \
        [(e["ts"], e["kind"], e["message"], e.get("group"), e.get("node"), e.get("reason"))
         for e in logged]
    assert all(e.detail and e.detail.startswith("idle") for e in timeline.events
               if e.kind == "stop")
    assert all(e.detail and "pending 1-CPU task" in e.detail for e in timeline.events
               if e.kind == "launch")
    running = [n for _, n in timeline.counts[("small", "running")]]
    assert max(running) == 2 and running[-1] == 0
    assert max(n for _, n in timeline.demand["tasks"]) >= 1
    # step changes only: far fewer rounds stored than the loop ran (~10 a second)
    assert len(store.conn.execute("SELECT id FROM rounds").fetchall()) < 60
    store.close()

    [job_row] = HistoryStore(history, readonly=True).jobs(row.id)
    assert (job_row.name, job_row.status) == ("hist-job", "SUCCEEDED")

    for _ in range(2):  # the UI, then the UI restarted: the same finished cluster
        with serve_ui(history, env=cluster.env) as ui:
            page = _get(f"{ui.url}/")
            assert "hist" in page and "finished" in page
            detail = _get(f"{ui.url}/clusters/{row.id}")
            assert 'id="ray-dashboard"' not in detail  # gone: no link to a dead dashboard
            assert f'href="/jobs/{job_row.id}/log"' in detail and "SUCCEEDED" in detail
            assert "HISTORY-JOB-MARKER" in _get(f"{ui.url}/jobs/{job_row.id}/log")
            if Path(CHROMIUM).exists():
                run = open_timeline(f"{ui.url}/clusters/{row.id}",
                                    ARTIFACTS / "ui-e2e-timeline.png")
                assert not run.problems, run.problems
                assert run.traces["launches"] == len(launches)
                assert run.traces["stops"] == len(stops)
