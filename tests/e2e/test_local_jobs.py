"""`rayscale job`: KubeRay RayJob files run on this machine, with real Ray.

One cluster (`rayscale up`) is shared by the tests that select it with
``clusterSelector``; the example file brings and removes its own. Every
process the tests start (the `job submit` commands, the clusters) carries
this module's RAYSCALE_HOME in its environment: at the end none may be left.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale import procs, rayauth
from rayscale.local.store import ClusterDir
from tests.e2e.conftest import RAYSCALE, cluster_spec, wait_for, worker_group

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rayjob.yaml"
SHARED = "jobs-shared"


def _pids_with_home(home: Path) -> list[int]:
    """Live processes whose environment has RAYSCALE_HOME=home (everything started here)."""
    needle = f"RAYSCALE_HOME={home}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and procs.is_alive(int(entry.name)):
            out.append(int(entry.name))
    return out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Jobs:
    def __init__(self, home: Path, workdir: Path) -> None:
        self.home = home
        self.workdir = workdir
        self.env = {**os.environ, "RAYSCALE_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
        for name in rayauth.AUTH_ENV_VARS:
            self.env.pop(name, None)
        self.started: list[subprocess.Popen[str]] = []

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RAYSCALE, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.workdir)

    def write(self, name: str, doc: dict[str, Any]) -> Path:
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def submit(self, path: Path) -> subprocess.Popen[str]:
        """`rayscale job submit` in its own session (stopped by group at the end), with
        SIGINT as a terminal gives it: a test run started in the background (`cmd &`
        in a script, as CI may be) inherits SIGINT ignored, and then Python never
        turns Ctrl-C into KeyboardInterrupt."""
        proc = subprocess.Popen([*RAYSCALE, "job", "submit", str(path)], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=self.workdir, start_new_session=True,
                                preexec_fn=_default_sigint)
        self.started.append(proc)
        return proc

    def run(self, path: Path, timeout: float = 300) -> tuple[int, str, str]:
        proc = self.submit(path)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs.stop_group(proc.pid)
            out, err = proc.communicate()
            raise AssertionError(f"job submit timed out\n{out}\n{err[-3000:]}") from None
        return proc.returncode, out, err

    def record(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "jobs" / name / "job.json").read_text())
        return data

    def clusters(self) -> list[str]:
        base = self.home / "clusters"
        return sorted(p.name for p in base.iterdir()) if base.exists() else []

    def cleanup(self) -> list[int]:
        for proc in self.started:
            if proc.poll() is None:
                procs.stop_group(proc.pid)
            proc.communicate()
        for name in self.clusters():
            self.cli("down", name, timeout=180)
        left = _pids_with_home(self.home)
        if left:
            procs.stop_pids(left)
        return left


def _listed(jobs: Jobs) -> dict[str, dict[str, Any]]:
    listed = jobs.cli("job", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {j["name"]: j for j in json.loads(listed.stdout)}


def job_doc(name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
    """A RayJob on the shared cluster (clusterSelector)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": {"entrypoint": entrypoint, "clusterSelector": {"ray.io/cluster": SHARED},
                 **spec},
    }


def py(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    root = tmp_path_factory.mktemp("jobs")
    (root / "work").mkdir()
    harness = Jobs(root / "home", root / "work")
    saved_auth = {name: os.environ.get(name) for name in rayauth.AUTH_ENV_VARS}
    try:
        yield harness
    finally:
        left = harness.cleanup()
        for name, value in saved_auth.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert not left, f"processes left: {[procs.cmdline(p)[:3] for p in left]}"


@pytest.fixture(scope="module")
def shared(jobs: Jobs) -> str:
    path = jobs.write(SHARED, cluster_spec(SHARED, [worker_group("w", max_replicas=1)]))
    up = jobs.cli("up", str(path), timeout=240)
    assert up.returncode == 0, up.stderr
    return SHARED


def test_the_example_job_scales_a_worker_up_and_its_cluster_is_gone_afterwards(
    jobs: Jobs,
) -> None:
    code, out, err = jobs.run(EXAMPLE)
    assert code == 0, err[-3000:]
    assert "squares: [0, 1, 4, 9]" in out  # the job's logs, streamed to stdout
    record = jobs.record("rayjob-sample")
    assert record["job_status"] == "SUCCEEDED"
    assert record["deployment_status"] == "Complete"
    assert record["cluster"].startswith("rayjob-sample-") and record["cluster_shut_down"]
    assert f"starting cluster {record['cluster']}" in err
    # its tasks ran on workers the autoscaler launched (the head has no CPU): the
    # cluster's scaling events are kept with the job
    assert "nodes used: ['" in out
    events = [json.loads(x) for x in (jobs.home / "jobs" / "rayjob-sample" /
                                      "cluster-events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "launch" and e.get("group") == "small-group" for e in events)
    # shutdownAfterJobFinishes: the cluster is gone, nothing of it runs
    assert record["cluster"] not in jobs.clusters()
    assert not [p for p in _pids_with_home(jobs.home) if p not in (x.pid for x in jobs.started)]
    # the logs are kept after the cluster is gone, privately
    logs = jobs.cli("job", "logs", "rayjob-sample")
    assert logs.returncode == 0 and "squares: [0, 1, 4, 9]" in logs.stdout
    job_dir = jobs.home / "jobs" / "rayjob-sample"
    assert (job_dir.stat().st_mode & 0o777) == 0o700
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in job_dir.iterdir())
    token_free = [f.read_text() for f in job_dir.iterdir()]
    assert not any("Bearer" in text for text in token_free)


def test_a_bad_file_exits_2_naming_the_field_and_starts_nothing(jobs: Jobs) -> None:
    before = jobs.clusters()
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "bad-job"
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = -1
    doc["spec"]["entrypointResources"] = "{not json"
    code, _, err = jobs.run(jobs.write("bad-job", doc), timeout=60)
    assert code == 2, err
    assert "rayClusterSpec.workerGroupSpecs[0].maxReplicas" in err
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = 2
    code, _, err = jobs.run(jobs.write("bad-job", doc), timeout=60)
    assert code == 2 and "entrypointResources: invalid JSON" in err, err
    assert jobs.clusters() == before
    assert not (jobs.home / "jobs" / "bad-job").exists()

    # suspend: true refuses to run, and says so
    doc["spec"]["entrypointResources"] = '{"x": 1}'
    doc["spec"]["suspend"] = True
    code, _, err = jobs.run(jobs.write("bad-job", doc), timeout=60)
    assert code == 4 and "suspended" in err, err
    assert jobs.clusters() == before
    assert jobs.record("bad-job")["deployment_status"] == "Suspended"


def test_a_failing_entrypoint_exits_1_with_rays_message(jobs: Jobs, shared: str) -> None:
    path = jobs.write("fails", job_doc(
        "fails", py("import sys; print('about to fail'); sys.exit(3)")))
    code, out, err = jobs.run(path)
    assert code == 1, err
    assert "about to fail" in out
    assert "exit code 3" in err  # Ray's message: "Job entrypoint command failed with exit code 3"
    record = jobs.record("fails")
    assert (record["job_status"], record["deployment_status"], record["reason"]) == \
        ("FAILED", "Failed", "AppFailed")


def test_cluster_selector_runs_on_the_existing_cluster_and_leaves_it_up(
    jobs: Jobs, shared: str,
) -> None:
    path = jobs.write("on-shared", job_doc(
        "on-shared", py("import os, ray; ray.init(); print('ON', ray.get(ray.remote("
                        "lambda: ray.get_runtime_context().get_node_id()).remote())[:8]); "
                        "print('GREETING', os.environ['GREETING']); print('CWD', os.getcwd())"),
        jobId="fixed-submission-id", metadata={"team": "a"}, entrypointNumCpus=0,
        runtimeEnvYAML="env_vars:\n  GREETING: hello\n"))
    code, out, err = jobs.run(path)
    assert code == 0, err
    assert "ON " in out
    assert "GREETING hello" in out  # runtimeEnvYAML reached Ray
    assert f"CWD {jobs.workdir}" in out  # run where `job submit` was run
    # Ray's own record of the job: the submission id and metadata from the file
    from ray.job_submission import JobSubmissionClient

    cluster = json.loads((jobs.home / "clusters" / shared / "cluster.json").read_text())
    client = JobSubmissionClient(f"http://{cluster['head_ip']}:{cluster['dashboard_port']}",
                                 headers=rayauth.bearer_headers(cluster["token_file"]))
    info = client.get_job_info("fixed-submission-id")
    assert info.metadata == {"team": "a"} and info.status.value == "SUCCEEDED"
    assert (info.runtime_env or {}).get("env_vars") == {"GREETING": "hello"}
    assert f"{shared} (clusterSelector) is left running" in err
    record = jobs.record("on-shared")
    assert record["cluster"] == shared and not record["owns_cluster"]
    assert record["submission_id"] == "fixed-submission-id"
    status = jobs.cli("status", shared, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "running"

    # not running: a clear failure, nothing started
    missing = jobs.write("nowhere", {**job_doc("nowhere", "true"),
                                     "spec": {"entrypoint": "true",
                                              "clusterSelector": {"ray.io/cluster": "nope"}}})
    code, out, err = jobs.run(missing, timeout=60)
    assert code == 1 and "no running local cluster named 'nope'" in err, err


def test_list_logs_and_stop(jobs: Jobs, shared: str) -> None:
    path = jobs.write("long", job_doc(
        "long", py("import time\nprint('started', flush=True)\ntime.sleep(600)")))
    proc = jobs.submit(path)
    wait_for(lambda: "started" in jobs.cli("job", "logs", "long").stdout, 120, "the job's logs")
    listed = jobs.cli("job", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith("long "))
    assert SHARED in line and "RUNNING" in line, listed.stdout
    assert _listed(jobs)["long"]["job_status"] == "RUNNING"

    again = jobs.run(path, timeout=60)  # one job of a name at a time
    assert again[0] == 1 and "job 'long' is running" in again[2], again[2]

    follower = subprocess.Popen([*RAYSCALE, "job", "logs", "long", "--follow"], env=jobs.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    jobs.started.append(follower)
    stop = jobs.cli("job", "stop", "long")
    assert stop.returncode == 0, stop.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err  # STOPPED
    assert "started" in out
    f_out, _ = follower.communicate(timeout=60)  # --follow ends with the job
    assert "started" in f_out
    record = jobs.record("long")
    assert record["job_status"] == "STOPPED"
    assert _listed(jobs)["long"]["job_status"] == "STOPPED"
    again = jobs.cli("job", "stop", "long")
    assert again.returncode == 1 and "already ended" in again.stderr


def test_stop_settles_a_job_whose_submit_command_was_killed(jobs: Jobs, shared: str) -> None:
    path = jobs.write("orphan", job_doc(
        "orphan", py("import time\nprint('started', flush=True)\ntime.sleep(600)")))
    proc = jobs.submit(path)
    wait_for(lambda: "started" in jobs.cli("job", "logs", "orphan").stdout, 120, "the job's logs")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    line = next(x for x in jobs.cli("job", "list").stdout.splitlines() if x.startswith("orphan"))
    assert "(submit command gone)" in line
    stop = jobs.cli("job", "stop", "orphan")
    assert stop.returncode == 0, stop.stderr
    record = jobs.record("orphan")
    assert (record["job_status"], record["deployment_status"]) == ("STOPPED", "Complete")


def test_ctrl_c_stops_the_job_and_the_deadline_fails_it(jobs: Jobs, shared: str) -> None:
    path = jobs.write("interrupted", job_doc(
        "interrupted", py("import time\nprint('started', flush=True)\ntime.sleep(600)")))
    proc = jobs.submit(path)
    wait_for(lambda: "started" in jobs.cli("job", "logs", "interrupted").stdout, 120,
             "the job's logs")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert jobs.record("interrupted")["job_status"] == "STOPPED"

    path = jobs.write("late", job_doc("late", py("import time; time.sleep(600)"),
                                      activeDeadlineSeconds=3))
    code, _, err = jobs.run(path)  # a 600 s job: only the deadline ends it within run's 300
    assert code == 1 and "activeDeadlineSeconds (3) exceeded" in err, err
    record = jobs.record("late")
    assert (record["job_status"], record["reason"]) == ("STOPPED", "DeadlineExceeded")


def _own_cluster_job(name: str, **spec: Any) -> dict[str, Any]:
    """A job with a small cluster of its own (no workers needed)."""
    cluster = cluster_spec("unused", [worker_group("w", max_replicas=1)])["spec"]
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name},
            "spec": {"entrypoint": py("print('done')"), "rayClusterSpec": cluster, **spec}}


def test_without_shutdown_the_cluster_is_left_running_and_said_how_to_reach(
    jobs: Jobs,
) -> None:
    path = jobs.write("keeps", _own_cluster_job("keeps", backoffLimit=2))
    code, out, err = jobs.run(path)
    assert code == 0 and "done" in out, err
    assert "not applied in local mode: backoffLimit" in err
    cluster = jobs.record("keeps")["cluster"]
    assert f"cluster {cluster} is left running" in err and f"rayscale down {cluster}" in err
    status = jobs.cli("status", cluster, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "running"
    down = jobs.cli("down", cluster, timeout=180)
    assert down.returncode == 0, down.stderr


def test_ttl_seconds_after_finished_is_waited_before_the_shutdown(jobs: Jobs) -> None:
    path = jobs.write("ttl", _own_cluster_job("ttl", shutdownAfterJobFinishes=True,
                                              ttlSecondsAfterFinished=4))
    proc = jobs.submit(path)
    wait_for(lambda: (jobs.home / "jobs" / "ttl" / "job.json").exists()
             and jobs.record("ttl")["job_status"] == "SUCCEEDED", 240, "the job to succeed")
    cluster = jobs.record("ttl")["cluster"]
    time.sleep(1)
    assert proc.poll() is None  # waiting out the TTL, the cluster still up
    assert json.loads(jobs.cli("status", cluster, "--json").stdout)["state"] == "running"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "keeping cluster" in err and "ttlSecondsAfterFinished" in err
    assert cluster not in jobs.clusters() and jobs.record("ttl")["cluster_shut_down"]


def test_a_deadline_that_passes_while_the_cluster_starts_fails_the_job_and_leaves_nothing(
    jobs: Jobs,
) -> None:
    before = set(_pids_with_home(jobs.home))
    path = jobs.write("too-short", _own_cluster_job(
        "too-short", shutdownAfterJobFinishes=True, activeDeadlineSeconds=1))
    code, _, err = jobs.run(path, timeout=180)
    assert code == 1, err
    record = jobs.record("too-short")
    assert (record["deployment_status"], record["reason"]) == ("Failed", "DeadlineExceeded")
    assert "activeDeadlineSeconds (1) passed while cluster" in err
    assert record["cluster"] not in jobs.clusters()
    # the half-started cluster is gone: nothing new here but processes of the clusters
    # still up (the module's shared cluster starts Ray workers when it likes)
    live = {ClusterDir(name, home=jobs.home).load().id for name in jobs.clusters()}
    new = set(_pids_with_home(jobs.home)) - before
    assert [p for p in new if procs.environ_marker(p) not in live] == []
