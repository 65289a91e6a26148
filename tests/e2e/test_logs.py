"""`rayscale logs` on a real local cluster: a job's output, a scaled-down worker's log
(also after `down`), --group, --since, --follow, --ray, and a bad --since refused.

One cluster: group ``small`` (1 CPU, min 1) runs from `up`; a job that needs 2
CPUs brings a ``big`` node, prints a marker, and the idle ``big`` node is then
stopped (idle timeout 3 s).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import RAYSCALE, Cluster, cluster_spec, wait_for, worker_group

pytestmark = pytest.mark.e2e

JOB = """
import ray
from rayscale.driver import connect
connect()

@ray.remote(num_cpus=2)
def where():
    return ray.get_runtime_context().get_node_id()

ray.get(where.remote())
print("LOGS-MARKER-7f3a from the job", flush=True)
"""


def _lines(out: str, prefix: str) -> list[str]:
    return [x for x in out.splitlines() if x.startswith(prefix)]


def test_logs_of_a_local_cluster(start_cluster: Callable[..., Cluster]) -> None:
    spec = cluster_spec("logs", [worker_group("small", cpu=1, min_replicas=1, max_replicas=1),
                                 worker_group("big", cpu=2, max_replicas=1)], idle_s=3)
    cluster = start_cluster(spec)
    script = cluster.home.parent / "job.py"
    script.write_text(JOB)
    job = cluster.cli("submit", cluster.name, "--", sys.executable, str(script), timeout=180,
                      check=False)
    assert job.returncode == 0, job.stderr[-3000:]
    launch = next(e for e in cluster.events("launch") if e.get("group") == "big")
    big = launch["message"].split("(")[1].split(")")[0]  # "launched 1 x big (big-1) for .."

    # every source by default, each line prefixed: the job's printed line is there
    everything = cluster.cli("logs", cluster.name).stdout
    assert any("LOGS-MARKER-7f3a" in x for x in _lines(everything, "job:raysubmit_")), \
        everything[-3000:]
    assert _lines(everything, "head ") and _lines(everything, "small-0 ")

    # the big node is stopped once idle; its log stays readable by id
    wait_for(lambda: any(e.get("node") == big for e in cluster.events("stop")), 60,
             f"{big} stopped when idle")
    wait_for(lambda: big not in {n["id"] for n in cluster.status()["nodes"]}, 30,
             f"{big} gone from status")
    alone = cluster.cli("logs", cluster.name, "--node", big).stdout
    assert "Ray runtime started." in alone and " | " not in alone.splitlines()[0]

    # --ray: Ray's own files of the node too, while its temp dir is there (until down)
    with_ray = cluster.cli("logs", cluster.name, "--node", "small-0", "--ray").stdout
    assert _lines(with_ray, "small-0/raylet.out ") and _lines(with_ray, "small-0 "), \
        with_ray[-2000:]

    # --group: only that group's nodes, each line prefixed with its node's id
    by_group = cluster.cli("logs", cluster.name, "--group", "big").stdout.splitlines()
    assert by_group and all(x.startswith(f"{big} | ") for x in by_group), by_group[:5]
    small = cluster.cli("logs", cluster.name, "--group", "small").stdout
    assert big not in small and _lines(small, "small-0 | ")

    # the autoscaler's log has the launch and the stop; --since keeps what came after a
    # moment between them (line timestamps), and nothing of a log not written since
    stop_ts = next(e["ts"] for e in cluster.events("stop") if e.get("node") == big)
    middle = (launch["ts"] + stop_ts) / 2
    window = f"{time.time() - middle:.2f}s"
    recent = cluster.cli("logs", cluster.name, "--node", "autoscaler", "--since", window).stdout
    whole = cluster.cli("logs", cluster.name, "--node", "autoscaler").stdout
    assert f"launch: launched 1 x big ({big})" in whole and f"({big})" not in recent, recent
    assert f"stop: stopping {big} (idle)" in recent, recent
    assert cluster.cli("logs", cluster.name, "--node", big, "--since", "1s").stdout == ""

    bad = cluster.cli("logs", cluster.name, "--since", "5 minutes", check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr and "30s" in bad.stderr, bad.stderr
    unknown = cluster.cli("logs", cluster.name, "--node", "big-99", check=False)
    assert unknown.returncode == 1 and big in unknown.stderr, unknown.stderr

    # --follow: a line appended to a node's log shows within a second
    follower = subprocess.Popen([*RAYSCALE, "logs", cluster.name, "--follow"], env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        while "small-0" not in (follower.stdout.readline() or "small-0"):
            pass  # the logs so far
        time.sleep(0.5)
        with (cluster.dir.logs / "small-0.log").open("a") as log:
            log.write("appended by the test\n")
        appended = time.monotonic()
        seen = None
        while seen is None:
            line = follower.stdout.readline()
            assert line, follower.stderr.read() if follower.stderr else ""
            if "appended by the test" in line:
                seen = time.monotonic() - appended
                assert line.startswith("small-0 ")
        assert seen < 1.0, f"the appended line took {seen:.2f}s"
    finally:
        follower.terminate()
        follower.wait(timeout=10)

    # after `down`: the stopped node, its group and the job's output are still there
    cluster.cli("down", cluster.name, timeout=180)
    assert "Ray runtime started." in cluster.cli("logs", cluster.name, "--node", big).stdout
    assert _lines(cluster.cli("logs", cluster.name, "--group", "big").stdout, f"{big} | ")
    assert "LOGS-MARKER-7f3a" in cluster.cli("logs", cluster.name).stdout
    listing = cluster.cli("logs", cluster.name, "--list").stdout
    assert all("stopped" in x for x in listing.splitlines()[1:]), listing
