"""RayJobs in local mode: the KubeRay ``ray.io/v1`` RayJob file, run on this machine.

``rayscale job submit JOB.yaml`` is the RayJob controller and the submitter
in one foreground process (:func:`run_job`):

1. the cluster: ``spec.rayClusterSpec`` becomes a RayCluster named
   ``<job>-<5 characters>`` (KubeRay's naming), brought up by the same
   :func:`~rayscale.local.cluster.up_spec` as ``rayscale up``, autoscaler
   included; or ``spec.clusterSelector`` (``ray.io/cluster: NAME``) names a
   running local cluster, which is only used, never shut down;
2. the entrypoint goes through Ray's job API (``JobSubmissionClient`` with
   the cluster's token), ``jobId`` as the submission id;
3. its logs are polled and handed to ``on_logs`` (and kept in the job's
   directory, so ``rayscale job logs`` works after the cluster is gone), and
   ``activeDeadlineSeconds`` (counted from the start of the command, cluster
   start-up included, as KubeRay counts from the RayJob's start) stops the
   job and fails it;
4. the cluster is shut down if ``shutdownAfterJobFinishes``, after waiting
   ``ttlSecondsAfterFinished`` (the command waits, then exits); otherwise it
   is left running.

Ctrl-C (or SIGTERM, which the CLI turns into one) while the command runs
stops the Ray job: a foreground ``rayscale job submit`` owns the job's whole
life, and nothing else would apply the deadline or the shutdown later. The
job ends STOPPED and the cluster follows the spec (during the TTL wait,
Ctrl-C shuts it down at once).

Each job's record (:class:`JobRecord`) lives in
``$RAYSCALE_HOME/jobs/<name>/`` (0700; files 0600): ``job.json``, the file
as submitted (``job.yaml``), the logs (``job.log``) and, once the job's own
cluster is shut down, its scaling events (``cluster-events.jsonl``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from rayscale import procs, rayauth
from rayscale.api import RayCluster, RayJob, RayJobSpec
from rayscale.history.store import HistoryError, HistoryStore
from rayscale.labels import RAY_API_VERSION
from rayscale.local.cluster import ClusterError, down, is_running, up_spec
from rayscale.local.store import ClusterDir
from rayscale.paths import append_private, private_dir, rayscale_home, write_private
from rayscale.spec import JobSubmission, job_submission, parse_cluster_spec
from rayscale.spec.job import CLUSTER_LABEL

#: Exit codes of `rayscale job submit` (and what `job list` shows as the result).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2  # a bad file: nothing started
EXIT_STOPPED = 3  # `rayscale job stop`, or Ctrl-C
EXIT_SUSPENDED = 4  # `suspend: true`: nothing started

#: KubeRay's JobDeploymentStatus values that local mode uses.
DeploymentStatus = Literal["Initializing", "Running", "Complete", "Failed", "Suspended"]
TERMINAL_RAY_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Ctrl-C ends `rayscale job submit` within this long, the Ray job's stop confirmed or not
INTERRUPT_LIMIT_S = 35.0
# KubeRay's rand.String alphabet (no vowels, no look-alikes)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
POLL_S = 0.5
log = logging.getLogger("rayscale.jobs")


class JobError(RuntimeError):
    """A job that cannot be found, started or stopped; the message says why."""


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    spec_file: str
    cluster: str
    #: the job made its cluster (shut down per the spec); a selected one is never ours
    owns_cluster: bool
    submission_id: str
    runner_pid: int | None = None
    job_status: str = ""  # Ray's: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    deployment_status: DeploymentStatus = "Initializing"
    reason: str | None = None  # KubeRay's JobFailedReason
    message: str | None = None
    start_time: float
    end_time: float | None = None
    cluster_shut_down: bool = False

    @property
    def finished(self) -> bool:
        return self.deployment_status in ("Complete", "Failed", "Suspended")

    def runner_alive(self) -> bool:
        return self.runner_pid is not None and procs.is_alive(self.runner_pid)


class JobDir:
    """Files of one named job."""

    def __init__(self, name: str, home: Path | None = None) -> None:
        self.name = name
        self.root = (home or rayscale_home()) / "jobs" / name

    @property
    def record_file(self) -> Path:
        return self.root / "job.json"

    @property
    def spec_copy(self) -> Path:
        return self.root / "job.yaml"

    @property
    def log_file(self) -> Path:
        return self.root / "job.log"

    @property
    def events_file(self) -> Path:
        """The scaling events of the job's own cluster, kept when it is shut down."""
        return self.root / "cluster-events.jsonl"

    def exists(self) -> bool:
        return self.record_file.exists()

    def load(self) -> JobRecord:
        if not self.exists():
            raise JobError(f"no job named {self.name!r}")
        return JobRecord.model_validate_json(self.record_file.read_text())

    def save(self, record: JobRecord) -> None:
        write_private(self.record_file, record.model_dump_json(indent=2))
        _history_job(record, self.log_file)


def _history_job(record: JobRecord, log_file: Path) -> None:
    """The job's row in the history (``rayscale ui``), at each status change."""
    try:
        store = HistoryStore()
        try:
            store.record_job(record.name, record.start_time, record.cluster,
                             record.job_status or record.deployment_status,
                             submission_id=record.submission_id, message=record.message,
                             log_path=str(log_file), ended=record.end_time)
        finally:
            store.close()
    except (HistoryError, sqlite3.Error, OSError) as exc:
        log.warning("could not record job %s in the history: %s", record.name, exc)


def all_jobs(home: Path | None = None) -> list[JobRecord]:
    base = (home or rayscale_home()) / "jobs"
    out = []
    if base.exists():
        for path in sorted(base.iterdir()):
            job = JobDir(path.name, home)
            with contextlib.suppress(OSError, ValueError, JobError):
                out.append(job.load())
    return out


def job_cluster(job: RayJob) -> RayCluster:
    """The RayCluster a job brings: its ``rayClusterSpec`` under ``<job>-<suffix>``."""
    assert job.spec.ray_cluster_spec is not None
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
    name = f"{job.metadata.name}-{suffix}"
    return parse_cluster_spec({
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": {
            "ray.io/originated-from-crd": "RayJob",
            "ray.io/originated-from-cr-name": job.metadata.name,
        }},
        "spec": job.spec.ray_cluster_spec.to_manifest(),
    })


def run_job(
    job: RayJob,
    source: Path,
    on_logs: Callable[[str], None],
    progress: Callable[[str], None],
    up_timeout_s: float = 180.0,
) -> int:
    """Run the job to its end (see the module docstring); returns the exit code."""
    name = job.metadata.name or ""
    jdir = JobDir(name)
    if jdir.exists():
        old = jdir.load()
        if not old.finished and old.runner_alive():
            raise JobError(f"job {name!r} is running (pid {old.runner_pid}); "
                           f"`rayscale job stop {name}` first")
        if old.owns_cluster and not old.cluster_shut_down and is_running(
                ClusterDir(old.cluster)):
            progress(f"cluster {old.cluster} of the job's previous run is still running "
                     f"(`rayscale down {old.cluster}` stops it)")
    started = time.time()
    deadline = (time.monotonic() + job.spec.active_deadline_seconds
                if job.spec.active_deadline_seconds else None)
    spec = job.spec
    selected = spec.cluster_selector.get(CLUSTER_LABEL)
    cluster_spec = job_cluster(job) if selected is None else None
    record = JobRecord(
        name=name,
        spec_file=str(source.resolve()),
        cluster=selected or (cluster_spec.name if cluster_spec else ""),
        owns_cluster=selected is None,
        submission_id=spec.job_id or f"{name}-{secrets.token_hex(3)}",
        runner_pid=os.getpid(),
        start_time=started,
    )
    shutil.rmtree(jdir.root, ignore_errors=True)  # a finished job of that name is replaced
    private_dir(jdir.root)
    write_private(jdir.spec_copy, source.read_bytes())
    write_private(jdir.log_file, b"")
    if spec.suspend:
        _finish(jdir, record, "Suspended", message="suspend: true: not run")
        progress(f"job {name} is suspended (spec.suspend: true): nothing started")
        return EXIT_SUSPENDED
    jdir.save(record)
    ignored = ignored_fields(spec)
    if ignored:
        progress(f"not applied in local mode: {', '.join(ignored)}")

    code = EXIT_FAILED
    try:
        code = _run(job, jdir, record, cluster_spec, deadline, up_timeout_s, on_logs, progress)
    except KeyboardInterrupt:
        progress("interrupted: stopping the job")
        code = _interrupt(jdir, record)
    finally:
        if not record.finished:  # an unexpected error: still a record that says so
            _finish(jdir, record, "Failed", message="rayscale job submit ended unexpectedly")
        _after(job.spec, jdir, record, progress, code != EXIT_STOPPED)
    return code


def ignored_fields(spec: RayJobSpec) -> list[str]:
    """Fields of the file that local mode validates but does not act on."""
    named = {
        "submitterPodTemplate": spec.submitter_pod_template is not None,
        "submitterConfig": spec.submitter_config is not None,
        "backoffLimit": spec.backoff_limit > 0,
        "deletionStrategy": spec.deletion_strategy is not None,
        "preRunningDeadlineSeconds": spec.pre_running_deadline_seconds is not None,
    }
    return [name for name, present in named.items() if present]


def _run(
    job: RayJob,
    jdir: JobDir,
    record: JobRecord,
    cluster_spec: RayCluster | None,
    deadline: float | None,
    up_timeout_s: float,
    on_logs: Callable[[str], None],
    progress: Callable[[str], None],
) -> int:
    if cluster_spec is not None:
        wait = up_timeout_s if deadline is None else min(up_timeout_s,
                                                          deadline - time.monotonic())
        progress(f"starting cluster {cluster_spec.name} for job {record.name}")
        manifest = yaml.safe_dump(cluster_spec.to_manifest(), sort_keys=False).encode()
        try:
            up_spec(cluster_spec, manifest, Path(record.spec_file), wait_s=max(wait, 1.0),
                    progress=progress)
        except ClusterError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                _finish(jdir, record, "Failed", reason="DeadlineExceeded",
                        message=f"activeDeadlineSeconds ({job.spec.active_deadline_seconds}) "
                                f"passed while cluster {record.cluster} was starting")
            else:
                _finish(jdir, record, "Failed", reason="SubmissionFailed",
                        message=f"cluster {record.cluster} did not start: {exc}")
            progress(f"job {record.name} failed: {record.message}")
            return EXIT_FAILED
    elif not is_running(ClusterDir(record.cluster)):
        _finish(jdir, record, "Failed", reason="SubmissionFailed",
                message=f"clusterSelector: no running local cluster named {record.cluster!r} "
                        f"(`rayscale up` it first)")
        progress(f"job {record.name} failed: {record.message}")
        return EXIT_FAILED

    client = cluster_client(record.cluster)
    submission = job_submission(job, entrypoint=_in_cwd(job))
    try:
        submit(client, record.submission_id, submission)
    except (OSError, RuntimeError, ValueError) as exc:
        _finish(jdir, record, "Failed", reason="SubmissionFailed",
                message=f"Ray's job API refused the job: {exc}")
        progress(f"job {record.name} failed: {record.message}")
        return EXIT_FAILED
    record.deployment_status = "Running"
    jdir.save(record)
    progress(f"job {record.name} submitted to cluster {record.cluster} "
             f"as {record.submission_id}")

    shown = 0
    while True:
        try:
            logs = client.get_job_logs(record.submission_id)
            info = client.get_job_info(record.submission_id)
        except (OSError, RuntimeError) as exc:
            _finish(jdir, record, "Failed", reason="JobStatusCheckTimeoutExceeded",
                    message=f"cluster {record.cluster} stopped answering: {exc}")
            progress(f"job {record.name} failed: {record.message}")
            return EXIT_FAILED
        if len(logs) > shown:
            chunk = logs[shown:]
            shown = len(logs)
            append_private(jdir.log_file, chunk)
            on_logs(chunk)
        status = str(info.status.value)
        if status != record.job_status:
            record.job_status = status
            jdir.save(record)
        if status in TERMINAL_RAY_STATUSES:
            return _ended(jdir, record, client, shown, on_logs, info.message, progress)
        if deadline is not None and time.monotonic() >= deadline:
            client.stop_job(record.submission_id)
            _wait_terminal(client, record.submission_id)
            record.job_status = str(client.get_job_status(record.submission_id).value)
            _finish(jdir, record, "Failed", reason="DeadlineExceeded",
                    message=f"activeDeadlineSeconds ({job.spec.active_deadline_seconds}) "
                            f"exceeded: the job was stopped")
            progress(f"job {record.name} failed: {record.message}")
            return EXIT_FAILED
        time.sleep(POLL_S)


def _ended(jdir: JobDir, record: JobRecord, client: Any, shown: int,
           on_logs: Callable[[str], None], message: str | None,
           progress: Callable[[str], None]) -> int:
    logs = client.get_job_logs(record.submission_id)
    if len(logs) > shown:
        append_private(jdir.log_file, logs[shown:])
        on_logs(logs[shown:])
    status = record.job_status
    if status == "SUCCEEDED":
        _finish(jdir, record, "Complete", message=message)
        code = EXIT_SUCCEEDED
    elif status == "STOPPED":
        _finish(jdir, record, "Complete", message=message or "stopped")
        code = EXIT_STOPPED
    else:
        _finish(jdir, record, "Failed", reason="AppFailed", message=message)
        code = EXIT_FAILED
    progress(f"job {record.name} {status}" + (f": {message}" if message and code else ""))
    return code


def _interrupt(jdir: JobDir, record: JobRecord, limit_s: float = INTERRUPT_LIMIT_S) -> int:
    """Ctrl-C: stop the Ray job (if it was submitted) and record it as STOPPED.

    Ray's job client has no timeouts, and a request cut short by the Ctrl-C can
    leave the dashboard slow to answer: the stop runs on a thread of its own and
    Ctrl-C returns after ``limit_s`` at most.
    """
    if record.deployment_status == "Running":

        def stop() -> None:
            with contextlib.suppress(Exception):
                client = cluster_client(record.cluster)
                client.stop_job(record.submission_id)
                _wait_terminal(client, record.submission_id)

        stopper = threading.Thread(target=stop, name="rayscale-job-stop", daemon=True)
        stopper.start()
        stopper.join(limit_s)
    record.job_status = "STOPPED"
    _finish(jdir, record, "Complete", message="interrupted (Ctrl-C): the job was stopped")
    return EXIT_STOPPED


def _after(spec: RayJobSpec, jdir: JobDir, record: JobRecord, progress: Callable[[str], None],
           wait_ttl: bool) -> None:
    """The cluster after the job: shut down per the spec, or left running (and how to use it)."""
    if not record.owns_cluster:
        progress(f"cluster {record.cluster} (clusterSelector) is left running")
        return
    cluster = ClusterDir(record.cluster)
    if not cluster.exists():
        return
    if not spec.shutdown_after_job_finishes:
        if is_running(cluster):
            progress(f"cluster {record.cluster} is left running (shutdownAfterJobFinishes is "
                     f"false): `rayscale status {record.cluster}`, `rayscale submit "
                     f"{record.cluster} -- CMD`, `rayscale down {record.cluster}`")
        return
    ttl = spec.ttl_seconds_after_finished
    if ttl and wait_ttl and is_running(cluster):
        progress(f"keeping cluster {record.cluster} for {ttl} s (ttlSecondsAfterFinished); "
                 f"Ctrl-C shuts it down now")
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(ttl)
    progress(f"shutting down cluster {record.cluster}")
    try:
        down(record.cluster)
    except ClusterError as exc:
        progress(f"cluster {record.cluster} did not shut down cleanly: {exc}")
        return
    _forget_cluster(jdir, cluster)
    record.cluster_shut_down = True
    jdir.save(record)


def _forget_cluster(jdir: JobDir, cluster: ClusterDir) -> None:
    """Remove a shut-down job cluster's directory, keeping its scaling events with the job."""
    if cluster.events_file.exists():
        write_private(jdir.events_file, cluster.events_file.read_bytes())
    shutil.rmtree(cluster.root, ignore_errors=True)


def _finish(jdir: JobDir, record: JobRecord, status: DeploymentStatus,
            reason: str | None = None, message: str | None = None) -> None:
    record.deployment_status = status
    record.reason = reason
    record.message = message
    record.end_time = time.time()
    jdir.save(record)


def _in_cwd(job: RayJob) -> str:
    """The entrypoint, run in the caller's directory unless the runtime env brings a
    ``working_dir`` (Ray then runs it there). The entrypoint itself is a shell command
    by Ray's definition (KubeRay passes it to `ray job submit` as is)."""
    entrypoint = job.spec.entrypoint or ""
    runtime_env = job_submission(job).runtime_env or {}
    if "working_dir" in runtime_env:
        return entrypoint
    return shlex.join(["cd", os.getcwd()]) + " && " + entrypoint


def cluster_client(cluster_name: str) -> Any:
    """Ray's job client for a running local cluster, with its token."""
    from ray.job_submission import JobSubmissionClient

    cluster = ClusterDir(cluster_name)
    if not is_running(cluster):
        raise JobError(f"cluster {cluster_name!r} is not running")
    record = cluster.load()
    return JobSubmissionClient(record.dashboard_url,
                               headers=rayauth.bearer_headers(record.token_file))


def submit(client: Any, submission_id: str, submission: JobSubmission) -> None:
    fields = {k: v for k, v in asdict(submission).items() if v not in (None, {})}
    client.submit_job(submission_id=submission_id, **fields)


def _wait_terminal(client: Any, submission_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if str(client.get_job_status(submission_id).value) in TERMINAL_RAY_STATUSES:
                return
        time.sleep(POLL_S)


def stop_job(name: str) -> JobRecord:
    """``rayscale job stop``: stop the Ray job; its ``job submit`` then ends (exit 3).

    If that command is gone (killed), the record is settled here and the job's own
    cluster is shut down if the spec says so.
    """
    jdir = JobDir(name)
    record = jdir.load()
    if record.finished:
        raise JobError(f"job {name!r} already ended "
                       f"({record.job_status or record.deployment_status})")
    if record.deployment_status == "Initializing" and record.runner_alive():
        raise JobError(f"job {name!r} is still starting (its cluster {record.cluster}); "
                       f"stop it once it runs, or press Ctrl-C where it was submitted")
    with contextlib.suppress(JobError, OSError, RuntimeError):
        client = cluster_client(record.cluster)
        client.stop_job(record.submission_id)
        _wait_terminal(client, record.submission_id)
    if not record.runner_alive():
        record.job_status = "STOPPED"
        _finish(jdir, record, "Complete", message="stopped by `rayscale job stop`")
        spec = yaml.safe_load(jdir.spec_copy.read_text()).get("spec", {})
        if record.owns_cluster and spec.get("shutdownAfterJobFinishes"):
            with contextlib.suppress(ClusterError):
                down(record.cluster)
                _forget_cluster(jdir, ClusterDir(record.cluster))
                record.cluster_shut_down = True
                jdir.save(record)
    return jdir.load()


def job_logs(name: str, follow: bool = False) -> Iterator[str]:
    """The job's logs: from its cluster while it runs there, else the kept copy."""
    jdir = JobDir(name)
    record = jdir.load()
    while follow and record.deployment_status == "Initializing" and record.runner_alive():
        time.sleep(POLL_S)  # its cluster is starting: the job is not submitted yet
        record = jdir.load()
    client = None
    if is_running(ClusterDir(record.cluster)) and record.deployment_status == "Running":
        with contextlib.suppress(JobError, OSError, RuntimeError):
            client = cluster_client(record.cluster)
            client.get_job_status(record.submission_id)
    if client is None:
        if jdir.log_file.exists():
            yield jdir.log_file.read_text(errors="replace")
        return
    shown = 0
    try:
        for chunk in follow_logs(client, record.submission_id, follow):
            shown += len(chunk)
            yield chunk
    except (OSError, RuntimeError):
        # the cluster went away (shut down after the job): the rest from the kept copy,
        # which holds Ray's logs as they came
        kept = jdir.log_file.read_text(errors="replace") if jdir.log_file.exists() else ""
        yield kept[shown:]


def follow_logs(client: Any, submission_id: str, follow: bool = True) -> Iterator[str]:
    """A Ray job's logs as they grow (polling: no event loop needed), until it ends.

    Without ``follow``, the logs so far. Ray's client errors (OSError, RuntimeError)
    pass through.
    """
    shown = 0
    while True:
        # the status first: once it is terminal, the logs read after it are complete
        done = not follow or str(client.get_job_status(submission_id).value) \
            in TERMINAL_RAY_STATUSES
        logs = client.get_job_logs(submission_id)
        if len(logs) > shown:
            yield logs[shown:]
            shown = len(logs)
        if done:
            return
        time.sleep(POLL_S)
