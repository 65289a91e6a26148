"""A local cluster with GCS fault tolerance (`rayscale up --ha`, Ray's embedded store;
and an external Redis, a real redis-server with a password): the head is killed
with SIGKILL mid-job and nothing is lost.

The head's whole session (`ray start`, its GCS, raylet and dashboard) is
killed, as when a head pod dies. The autoscaler starts a new head on the same
address, ports and store (Redis: namespace); the workers reconnect to it and
are not replaced; a detached actor keeps its state; the autoscaler stopped and
launched nothing meanwhile; and a job whose driver runs on a worker (attached to
that worker's raylet) finishes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale import procs, rayauth
from rayscale.labels import NODE_LABEL
from rayscale.ports import free_port
from tests.e2e.conftest import RAYSCALE, Cluster, cluster_spec, wait_for, worker_group
from tests.redisfix import Redis, redis_server

pytestmark = pytest.mark.e2e

COUNTER = """
import ray

@ray.remote(num_cpus=0.5, max_restarts=-1)
class Counter:
    def __init__(self):
        self.n = 0
    def add(self):
        self.n += 1
        return self.n
"""

JOB = """
import os, time, ray
from rayscale.driver import connect
connect()  # to its own worker's raylet (a plain ray.init() attaches to the head's)
go = {go!r}
deadline = time.time() + 300
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.2)

@ray.remote(num_cpus=0.5)
def square(x):
    return x * x

result = ray.get(square.remote(7), timeout=120)
with open(go + ".result", "w") as f:
    f.write("job result %d on %s" % (result, ray.get_runtime_context().get_node_id()))
"""


def _worker_ray_ids(cluster: Cluster) -> dict[str, str]:
    """Our node id -> Ray node id, of the workers Ray shows alive."""
    return {n.labels[NODE_LABEL]: n.node_id for n in cluster.observer().observe().alive()
            if NODE_LABEL in n.labels}


def _kill_head(cluster: Cluster) -> int:
    """SIGKILL every process of the head's session (rayscale's record: checked to be ours)."""
    record = cluster.dir.load()
    head = record.head_pid
    assert head is not None and procs.is_alive(head)
    assert procs.environ_marker(head) == record.id, "the recorded head PID is not ours"
    members = procs.session_members(head)
    assert head in members and len(members) > 1
    for pid in members:
        with contextlib.suppress(ProcessLookupError):  # a short-lived member may be gone
            os.kill(pid, signal.SIGKILL)
    return head


def _job_client(cluster: Cluster) -> Any:
    from ray.job_submission import JobSubmissionClient

    record = cluster.dir.load()
    return JobSubmissionClient(record.dashboard_url,
                               headers=rayauth.bearer_headers(record.token_file))


def test_killed_head_restarts_and_loses_nothing(start_cluster: Any, tmp_path: Path) -> None:
    spec = cluster_spec("hakill", [worker_group("w", min_replicas=2, max_replicas=2)],
                        idle_s=600)
    cluster = start_cluster(spec, "--ha")
    record = cluster.dir.load()
    assert record.gcs_storage == "rocksdb" and (cluster.dir.gcs_store / "session_name").exists()
    _kill_head_mid_job(cluster, tmp_path)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """A real redis-server with a password; requested before ``start_cluster``, so it
    outlives the cluster's teardown (whose `down` deletes the keys)."""
    with redis_server(tmp_path / "redis") as server:
        yield server


def _redis_spec(name: str, redis: Redis, password: str) -> dict[str, Any]:
    spec = cluster_spec(name, [worker_group("w", min_replicas=2, max_replicas=2)], idle_s=600)
    spec["spec"]["gcsFaultToleranceOptions"] = {
        "redisAddress": redis.address, "redisPassword": {"value": password}}
    return spec


def test_killed_head_restarts_on_redis_and_down_deletes_its_keys(
        redis: Redis, start_cluster: Any, tmp_path: Path) -> None:
    cluster = start_cluster(_redis_spec("haredis", redis, redis.password))
    record = cluster.dir.load()
    assert record.gcs_storage == "redis" and record.redis_address == redis.address
    namespace = record.redis_namespace
    assert namespace == record.id  # the default: this cluster's own id
    assert redis.keys(f"RAY{namespace}@*"), "no GCS keys under the cluster's namespace"
    assert not cluster.dir.gcs_store.exists()
    status = cluster.cli("status", cluster.name)
    shown = " ".join(status.stdout.split())  # rich wraps long lines
    assert f"fault tolerance: redis at {redis.address} (namespace {namespace})" in shown, shown

    _kill_head_mid_job(cluster, tmp_path)
    assert redis.keys(f"RAY{namespace}@*")
    status_json = cluster.cli("status", cluster.name, "--json").stdout
    assert f'"storage": "redis at {redis.address} (namespace {namespace})"' in status_json

    # the password is in no status, event, record or log of rayscale's
    texts = {"status": status.stdout + status_json, "up": cluster.up_stderr,
             "up's driver env": "\n".join(f"{k}={v}" for k, v in cluster.driver_env.items()
                                           if k not in cluster.env)}
    texts |= {str(p): p.read_text(errors="replace") for p in cluster.dir.root.rglob("*")
              if p.is_file() and p != cluster.dir.spec_copy}
    leaked = [where for where, text in texts.items() if redis.password in text]
    assert not leaked, f"the Redis password is written in {leaked}"

    down = cluster.cli("down", cluster.name, timeout=180)
    assert f"GCS key(s) from the Redis at {redis.address}" in down.stderr, down.stderr
    assert redis.keys(f"RAY{namespace}@*") == []
    assert redis.dbsize() == 0


@pytest.mark.parametrize("problem", ["password", "address"])
def test_up_with_a_wrong_redis_fails_and_starts_nothing(
        redis: Redis, problem: str, tmp_path: Path) -> None:
    spec = _redis_spec("badredis", redis, "not-the-password")
    if problem == "address":
        spec["spec"]["gcsFaultToleranceOptions"] = {
            "redisAddress": f"{redis.host}:{free_port()}",
            "redisPassword": {"value": redis.password}}
    path = tmp_path / "badredis.yaml"
    path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    env = {**os.environ, "RAYSCALE_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    up = subprocess.run([*RAYSCALE, "up", str(path)], env=env, capture_output=True, text=True,
                        timeout=120, check=False)
    assert up.returncode == 1, up.stderr
    message = " ".join(up.stderr.split())
    field = "redisPassword: the Redis at" if problem == "password" else \
        "redisAddress: cannot reach the Redis at"
    assert f"gcsFaultToleranceOptions.{field}" in message, up.stderr
    assert "nothing was started" in message
    assert redis.password not in up.stderr + up.stdout
    assert not (home / "clusters" / "badredis").exists()
    assert redis.dbsize() == 0


def _kill_head_mid_job(cluster: Cluster, tmp_path: Path) -> None:
    """A detached actor and a job whose driver runs on a worker; SIGKILL of the head's
    session; the head comes back, the workers rejoin with their node ids, the actor
    kept its count, nothing was launched or stopped, and the job finishes."""
    workers = {n.id: n.pid for n in cluster.dir.nodes()}
    assert len(workers) == 2
    ray_ids = wait_for(lambda: len(_worker_ray_ids(cluster)) == 2 and _worker_ray_ids(cluster),
                       60, "both workers in Ray")

    out = cluster.run_driver(COUNTER + textwrap.dedent("""
        c = Counter.options(name="counter", namespace="ha", lifetime="detached").remote()
        print("counter", [ray.get(c.add.remote()) for _ in range(3)][-1])
    """))
    assert "counter 3" in out

    go = tmp_path / "go"
    client = _job_client(cluster)
    script = tmp_path / "job.py"
    script.write_text(JOB.format(go=str(go)))
    job = client.submit_job(
        entrypoint=shlex.join([sys.executable, str(script)]),
        entrypoint_num_cpus=0.5,  # the driver runs on a worker (the head has no CPU)
    )
    wait_for(lambda: str(client.get_job_status(job).value) == "RUNNING", 60, "the job to run")

    killed_at = time.time()
    old_head = _kill_head(cluster)
    wait_for(lambda: not procs.is_alive(old_head), 10, "the old head to die")

    def restarted() -> bool:
        now = cluster.dir.load()
        return now.head_restarts == 1 and now.head_pid not in (None, old_head)

    wait_for(restarted, 60, "a new head")
    status = wait_for(lambda: (s := cluster.cli("status", cluster.name, "--json", check=False))
                      .returncode == 0 and s, 120, "the cluster to be running again")
    assert '"restarts": 1' in status.stdout
    wait_for(lambda: _worker_ray_ids(cluster) == ray_ids, 120,
             "both workers back in Ray, with their node ids")
    print(f"head back and workers registered {time.time() - killed_at:.1f}s after the kill")

    # the detached actor kept its state (same process: max_restarts is not used)
    out = cluster.run_driver(COUNTER + textwrap.dedent("""
        c = ray.get_actor("counter", namespace="ha")
        print("counter", ray.get(c.add.remote()))
    """))
    assert "counter 4" in out

    go.touch()  # the job (its driver on a worker) may go on: checked last

    # no worker replaced: same records, same processes
    assert {n.id: n.pid for n in cluster.dir.nodes()} == workers
    assert all(procs.is_alive(pid) for pid in workers.values() if pid is not None)
    try:
        wait_for(lambda: cluster.events("hold_end"), 90, "the autoscaler to resume scaling")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nevents: {cluster.events()[-12:]}") from None
    after = [e for e in cluster.events() if e["ts"] >= killed_at]
    kinds = {e["kind"] for e in after}
    print("\n".join(f"{e['kind']}: {e['message']}" for e in after))
    assert {"head_restart", "gcs_unreachable", "gcs_back", "hold_end"} <= kinds, after
    assert not kinds & {"stop", "launch", "lost", "launch_failed", "drain"}, after
    assert cluster.status()["head"]["restarts"] == 1

    # the job goes on and finishes: its driver is attached to its worker's raylet
    # (rayscale.driver.connect(); a plain ray.init() would attach to the head's,
    # gone with the head: docs/head-failures.md)
    client = _job_client(cluster)
    try:
        wait_for(lambda: str(client.get_job_status(job).value) in
                 ("SUCCEEDED", "FAILED", "STOPPED"), 90, "the job to finish")
    except AssertionError as exc:
        seen = cluster.observer().observe()
        nodes = [(n.labels.get(NODE_LABEL, "head"), n.status, n.available) for n in seen.nodes]
        raise AssertionError(f"the job did not finish after the failover: {exc}; nodes: "
                             f"{nodes}; pending: {seen.tasks}") from None
    info = client.get_job_info(job)
    assert str(info.status.value) == "SUCCEEDED", info
    result, _, node = (tmp_path / "go.result").read_text().partition(" on ")
    assert result == "job result 49"
    assert node in ray_ids.values(), f"the job's driver is not on a worker: {node}"
