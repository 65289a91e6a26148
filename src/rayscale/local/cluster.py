"""`up` and `down` of a local cluster: a Ray head on loopback plus its autoscaler.

Everything `up` starts is recorded (PIDs in cluster.json, node records) and
carries the cluster's environment marker, so `down` stops exactly that, by
process group, and then sweeps for anything with the marker that slipped
through (a worker process Ray started in a session of its own).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayscale import cloudprobe, procs, rayauth
from rayscale.api import RayCluster
from rayscale.history.schema import default_path as default_history_path
from rayscale.history.store import HistoryError, HistoryStore
from rayscale.labels import GROUP_LABEL, HEAD_GROUP
from rayscale.local import scrape
from rayscale.local.pacing import PacingError, parallel_starts
from rayscale.local.provider import (
    NODE_IP_ENV,
    ha_env,
    local_overrides,
    node_env,
    ray_executable,
    ray_node_type,
)
from rayscale.local.raylogs import keep_job_logs
from rayscale.local.redisstore import RedisStore, StoreError, delete_keys, probe, redis_store
from rayscale.local.store import ClusterDir, ClusterRecord, free_slot, head_ip, now
from rayscale.local.zygote_client import wanted as zygote_wanted
from rayscale.paths import UnsafePathError, private_dir, write_private
from rayscale.ports import free_port, reserve
from rayscale.raystart import (
    DEMAND_PULL_ENV,
    DEMAND_PULL_MS,
    RayStart,
    node_labels,
    ray_start_argv,
)
from rayscale.spec import load_cluster_spec

log = logging.getLogger("rayscale.local")


def temp_root() -> Path:
    """Ray's temp dirs of this user's clusters: short (Ray's unix socket paths are
    limited to 107 bytes), per user and 0700 (/tmp is shared)."""
    return Path(f"/tmp/rs-{os.getuid()}")


class ClusterError(RuntimeError):
    """A local cluster could not be started or found; the message says why."""



def is_running(cluster: ClusterDir) -> bool:
    if not cluster.exists():
        return False
    record = cluster.load()
    return record.head_pid is not None and procs.is_alive(record.head_pid)


def wants_token_auth(spec: RayCluster, no_auth: bool = False) -> bool:
    """Local clusters use Ray's token auth unless the file or the flag turns it off.

    KubeRay treats a missing ``authOptions`` as "no auth"; a local cluster listens
    on this machine's addresses, so here only an explicit ``mode: disabled`` (or
    ``rayscale up --no-auth``) turns it off.
    """
    options = spec.spec.auth_options
    return not no_auth and not (options is not None and options.mode == "disabled")


def gcs_storage(spec: RayCluster, ha: bool = False) -> str | None:
    """The GCS store of a local cluster: "redis" (an external Redis: the cluster file's
    ``gcsFaultToleranceOptions.redisAddress``, or the ``ray.io/ft-enabled`` annotation
    with ``RAY_REDIS_ADDRESS``), "rocksdb" (Ray's embedded store) with ``--ha`` or
    ``gcsFaultToleranceOptions.backend: rocksdb``; None: in memory."""
    if cluster_redis(spec, "-") is not None:
        if ha:
            raise ClusterError(
                "--ha runs Ray's embedded store, but the cluster file names a Redis "
                "(gcsFaultToleranceOptions.redisAddress or RAY_REDIS_ADDRESS): drop one")
        return "redis"
    options = spec.spec.gcs_fault_tolerance_options
    if ha or (options is not None and options.backend == "rocksdb"):
        return "rocksdb"
    return None


def cluster_redis(spec: RayCluster, namespace: str) -> RedisStore | None:
    """The Redis the cluster's GCS uses (``namespace``: the default storage namespace),
    or None; a misconfiguration is a :class:`ClusterError` naming the field."""
    try:
        return redis_store(spec, namespace)
    except StoreError as exc:
        raise ClusterError(str(exc)) from None


def _record_redis(spec: RayCluster, record: ClusterRecord) -> RedisStore | None:
    """The Redis of a running cluster: its recorded namespace, its file's credentials."""
    if record.gcs_storage != "redis":
        return None
    return cluster_redis(spec, record.redis_namespace or record.id)


def up(
    spec_file: Path,
    wait_s: float = 180.0,
    progress: Callable[[str], None] = lambda _: None,
    no_auth: bool = False,
    ha: bool = False,
) -> tuple[RayCluster, ClusterRecord]:
    """Start head and autoscaler; return once the cluster is ready (min workers joined).

    With token auth (the default) the cluster's token is created first, and this
    process's Ray clients are switched to it (``rayauth.activate``).
    """
    spec = load_cluster_spec(spec_file)  # SpecError: nothing started
    record = up_spec(spec, spec_file.read_bytes(), spec_file, wait_s=wait_s, progress=progress,
                     no_auth=no_auth, ha=ha)
    return spec, record


def up_spec(
    spec: RayCluster,
    manifest: bytes,
    source: Path,
    wait_s: float = 180.0,
    progress: Callable[[str], None] = lambda _: None,
    no_auth: bool = False,
    ha: bool = False,
) -> ClusterRecord:
    """:func:`up` of a validated cluster: ``manifest`` is its document (the autoscaler
    reads it), ``source`` the file it came from (a RayCluster, or a RayJob's)."""
    try:  # the autoscaler reads them: a bad value is refused before anything starts
        parallel_starts()
        zygote_wanted()
    except (PacingError, ValueError) as exc:
        raise ClusterError(str(exc)) from None
    storage = gcs_storage(spec, ha)
    cluster = ClusterDir(spec.name)
    if is_running(cluster):
        raise ClusterError(
            f"cluster {spec.name!r} is already running (head pid {cluster.load().head_pid}); "
            f"`rayscale down {spec.name}` first"
        )
    if cluster.exists():
        down(spec.name)  # leftovers of a cluster that died: clean them first
        shutil.rmtree(cluster.root, ignore_errors=True)

    slot = free_slot()
    ip = head_ip(slot)
    marker = uuid.uuid4().hex[:12]
    store = cluster_redis(spec, marker)
    if store is not None:
        progress(f"checking the Redis at {store.address} (namespace {store.namespace})")
        _check_redis(store)  # before anything is started or written
    record = ClusterRecord(
        name=spec.name,
        id=marker,
        spec_file=str(source.resolve()),
        slot=slot,
        head_ip=ip,
        gcs_port=free_port(),
        dashboard_port=free_port(),
        client_port=free_port(),
        temp_dir=str(temp_root() / marker[:10]),
        created=now(),
        gcs_storage=storage,
        redis_address=store.address if store is not None else None,
        redis_namespace=store.namespace if store is not None else None,
        ray_node_metrics=scrape.ray_node_metrics(os.environ),
    )
    try:
        cluster.create()
        private_dir(temp_root())
    except UnsafePathError as exc:
        raise ClusterError(str(exc)) from None
    write_private(cluster.spec_copy, manifest)
    if wants_token_auth(spec, no_auth):
        record.token_file = str(rayauth.create_token_file(cluster.token_file))
    # the head's dashboard would otherwise probe cloud metadata servers (cloudprobe)
    cloudprobe.ensure_bootstrap_config(Path.home())
    cluster.save(record)
    try:
        progress(f"starting Ray head on {record.address}")
        start_head(spec, cluster, record)
        _wait_for_gcs(cluster, record, deadline=time.monotonic() + wait_s)
        progress("starting the autoscaler")
        _start_autoscaler(cluster, record)
        _wait_ready(spec, cluster, record, deadline=time.monotonic() + wait_s, progress=progress)
        scrape.write(cluster)  # the autoscaler keeps it up to date from now on
    except BaseException:
        down(spec.name)
        raise
    return cluster.load()


def _check_redis(store: RedisStore) -> None:
    """The GCS can use ``store``: it answers, takes the credentials, and its namespace
    is empty (keys there belong to another cluster, or to one whose `down` never ran)."""
    try:
        existing = probe(store)
    except StoreError as exc:
        raise ClusterError(f"GCS fault tolerance: {exc}; nothing was started") from None
    if existing:
        raise ClusterError(
            f"GCS fault tolerance: the Redis at {store.address} already holds {existing} "
            f"key(s) of storage namespace {store.namespace!r} (another cluster's, or left "
            "by one whose `rayscale down` did not run): set another "
            "externalStorageNamespace, or delete them; nothing was started")


def start_head(spec: RayCluster, cluster: ClusterDir, record: ClusterRecord) -> None:
    """Spawn the head's `ray start` and record its PID (it runs in a session of its own).

    With GCS fault tolerance the GCS keeps its tables in Ray's embedded store
    (RocksDB) under the cluster's directory; a head started again on the same
    address, ports and store takes the cluster over (:func:`restart_head`).
    """
    reserve(record.gcs_port, record.dashboard_port, record.client_port, record.metrics_port,
            record.dashboard_metrics_port, record.head_metrics_export_port)
    store = _record_redis(spec, record)
    argv = head_argv(spec, record, store)
    # a restarted head keeps them: Prometheus goes on scraping the same targets
    record.head_metrics_export_port = scrape.export_port(argv)
    record.dashboard_metrics_port = record.dashboard_metrics_port or free_port()
    env = {**node_env(record), **ha_env(record), **ray_node_type(HEAD_GROUP),
           NODE_IP_ENV: record.head_ip}
    env.setdefault(DEMAND_PULL_ENV, DEMAND_PULL_MS)
    if store is not None:
        env.update(store.head_env())
    if record.gcs_storage == "rocksdb":
        env["RAY_gcs_storage"] = "rocksdb"
        env["RAY_gcs_storage_path"] = str(cluster.gcs_store)
        private_dir(cluster.gcs_store)
    # the dashboard's own metric ports default to fixed numbers: two clusters clash
    env["AUTOSCALER_METRIC_PORT"] = str(free_port())
    env["DASHBOARD_METRIC_PORT"] = str(record.dashboard_metrics_port)
    proc = procs.spawn(argv, env, cluster.logs / "head.log")
    record.head_pid = proc.pid
    cluster.save(record)


def head_argv(spec: RayCluster, record: ClusterRecord,
              store: RedisStore | None = None) -> list[str]:
    """The head's `ray start` (its ports are picked here, free now); with a Redis, its
    credentials (Ray 2.60 takes them only as `ray start` options)."""
    resources = spec.head.ray_resources
    overrides = local_overrides(record.head_ip, resources)
    if record.head_metrics_export_port:  # a restarted head: the port it had
        overrides["metrics-export-port"] = str(record.head_metrics_export_port)
    overrides.update({
        "dashboard-host": record.head_ip,
        "dashboard-port": str(record.dashboard_port),
        "ray-client-server-port": str(record.client_port),
        "include-dashboard": "true",
        # rayscale is this cluster's autoscaler: Ray's built-in monitor would only
        # print "no node types" complaints into every driver's output
        "no-monitor": "true",
    })
    if store is not None:
        overrides.update(store.start_params())
    return ray_start_argv(
        ray_executable(),
        spec.head.ray_start_params,
        RayStart(
            node_ip=record.head_ip,
            resources=resources,
            gcs_port=record.gcs_port,
            temp_dir=record.head_temp_dir(),
            labels=node_labels(spec.head.labels, {GROUP_LABEL: HEAD_GROUP}),
            overrides=overrides,
        ),
    )


def restart_head(spec: RayCluster, cluster: ClusterDir) -> ClusterRecord:
    """Start a new head for an HA cluster whose head process died.

    What is left of the old head's session (its GCS, raylet, dashboard: they
    may outlive a killed `ray start`) is stopped first, so the new head gets
    the same address, ports and store. The workers reconnect to it.
    """
    record = cluster.load()
    if not record.ha:
        raise ClusterError(f"cluster {record.name!r} runs without GCS fault tolerance")
    old = record.head_pid
    if old is not None and procs.is_alive(old):
        raise ClusterError(f"the head of {record.name!r} is running (pid {old})")
    if old is not None and _session_is_ours(old, record.id):
        procs.stop_session(old, grace_s=2.0)
    record.head_restarts += 1
    record.head_restarted_at = now()
    start_head(spec, cluster, record)
    return record


def _log_tail(log: Path, lines: int = 12) -> str:
    """The end of a log, indented, and where the whole of it is."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    return "".join(f"  | {line}\n" for line in tail) + f"full log: {log}"


def _wait_for_gcs(cluster: ClusterDir, record: ClusterRecord, deadline: float) -> None:
    from rayscale.observe.ray_state import RayObserver

    rayauth.activate(record.token_file)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if record.head_pid is None or not procs.is_alive(record.head_pid):
            raise ClusterError("the Ray head exited while starting:\n"
                               + _log_tail(cluster.logs / "head.log"))
        try:
            observation = RayObserver(record.address).observe()
            if any(n.ip == record.head_ip for n in observation.alive()):
                return
        except Exception as exc:
            last = exc
        time.sleep(0.3)
    raise ClusterError(f"the Ray head did not come up in time ({last!r})")


def _start_autoscaler(cluster: ClusterDir, record: ClusterRecord) -> None:
    argv = [sys.executable, "-m", "rayscale.cli.main", "autoscaler", "--cluster", record.name]
    proc = procs.spawn(argv, node_env(record), cluster.logs / "autoscaler.log")
    record.autoscaler_pid = proc.pid
    cluster.save(record)


def _wait_ready(
    spec: RayCluster,
    cluster: ClusterDir,
    record: ClusterRecord,
    deadline: float,
    progress: Callable[[str], None],
) -> None:
    """Ready: the autoscaler reports, and every group has its min workers running."""

    def mins_running(status: dict[str, Any]) -> bool:
        groups = status["groups"]
        return all(groups[g.group_name]["running"] >= g.min_replicas
                   for g in spec.worker_groups if not g.suspend)

    if any(g.min_replicas for g in spec.worker_groups):
        progress("waiting for every group's minReplicas to register")
    _wait_status(cluster, record, deadline, mins_running, "the cluster did not become ready")


def resume(name: str, wait_s: float = 60.0) -> ClusterRecord:
    """Restart the autoscaler of a running cluster whose autoscaler died.

    The new loop adopts the worker processes already running (their records and
    Ray labels) and launches no duplicates.
    """
    cluster = ClusterDir(name)
    if not is_running(cluster):
        raise ClusterError(f"cluster {name!r} is not running; `rayscale up` it")
    record = cluster.load()
    if record.autoscaler_pid is not None and procs.is_alive(record.autoscaler_pid):
        raise ClusterError(f"the autoscaler of {name!r} is running (pid {record.autoscaler_pid})")
    _start_autoscaler(cluster, record)
    _wait_status(cluster, record, time.monotonic() + wait_s, lambda _: True,
                 "the autoscaler did not report")
    scrape.write(cluster)  # the new autoscaler's metrics port
    return cluster.load()


def _wait_status(
    cluster: ClusterDir,
    record: ClusterRecord,
    deadline: float,
    done: Callable[[dict[str, Any]], bool],
    failure: str,
) -> None:
    """Until the autoscaler (alive) writes a status newer than now that satisfies ``done``."""
    started = time.time()
    while time.monotonic() < deadline:
        if record.autoscaler_pid is None or not procs.is_alive(record.autoscaler_pid):
            raise ClusterError("the autoscaler exited while starting:\n"
                               + _log_tail(cluster.logs / "autoscaler.log"))
        status = cluster.read_status()
        if status is not None and status.get("updated_at", 0) >= started and done(status):
            return
        time.sleep(0.3)
    raise ClusterError(f"{failure} in time; see the logs in {cluster.logs}")


SWEEP_ROUNDS = 5  # how many times `down` looks again for processes of the cluster


def down(name: str, report: Callable[[str], None] = lambda _: None) -> list[int]:
    """Stop the autoscaler, every worker, then the head; return PIDs that were stopped.

    However the cluster died, nothing is left: each node's whole session is
    stopped (Ray's orphans included, whose marker Ray may have overwritten),
    then anything else with the marker; what survives is reported. A cluster
    whose GCS is in Redis then has its keys there deleted (KubeRay's cleanup
    finalizer); when that fails ``report`` gets a warning and down goes on.
    """
    cluster = ClusterDir(name)
    if not cluster.exists():
        raise ClusterError(f"no cluster named {name!r}")
    record = cluster.load()
    scrape.remove(cluster)  # Prometheus stops scraping what is about to go
    stopped: list[int] = []
    # the autoscaler first, so it launches nothing while we stop the rest
    sessions = [pid for pid in [record.autoscaler_pid, *(n.pid for n in cluster.nodes()),
                                record.head_pid] if pid is not None]
    ours = [sid for sid in sessions if _session_is_ours(sid, record.id)]
    for sid in ours:
        stopped += procs.stop_session(sid)
    # anything else that carries the marker (e.g. a node whose record was lost), and
    # what a process being stopped spawned meanwhile (a head cut short while starting):
    # swept again until a look finds nothing
    for _ in range(SWEEP_ROUNDS):
        leftovers = sorted({*procs.pids_with_marker(record.id),
                            *(pid for sid in ours for pid in procs.session_members(sid))})
        if not leftovers:
            break
        procs.stop_pids(leftovers)
        stopped += leftovers
        time.sleep(0.2)
    survivors = sorted({*procs.pids_with_marker(record.id),
                        *(pid for sid in ours for pid in procs.session_members(sid))})
    for node in cluster.nodes():
        cluster.forget_node(node.id)
    scrape.remove(cluster)  # again: the autoscaler may have written it before it stopped
    record.head_pid = None
    record.autoscaler_pid = None
    cluster.save(record)
    keep_job_logs(cluster, record)  # the rest of Ray's logs go with the temp dirs
    shutil.rmtree(record.temp_dir, ignore_errors=True)
    _history_gone(record.id)
    if survivors:  # a GCS still running would write its keys again: they stay
        raise ClusterError(f"processes of {name!r} did not stop: {survivors}")
    _clean_redis(cluster, record, report)
    return stopped


def _history_gone(uid: str) -> None:
    """The history (``rayscale ui``) shows the cluster as finished; it keeps its rounds."""
    if not default_history_path().exists():
        return  # no autoscaler ever wrote one: nothing to mark
    try:
        store = HistoryStore()
        try:
            store.mark_gone(uid)
        finally:
            store.close()
    except (HistoryError, sqlite3.Error, OSError) as exc:
        log.warning("could not mark %s gone in the history: %s", uid, exc)


def _clean_redis(cluster: ClusterDir, record: ClusterRecord,
                 report: Callable[[str], None]) -> None:
    """Delete the cluster's keys from its Redis, once (the record then forgets it)."""
    if record.gcs_storage != "redis" or record.redis_namespace is None:
        return
    where = f"the Redis at {record.redis_address}, namespace {record.redis_namespace!r}"
    try:
        store = _record_redis(load_cluster_spec(cluster.spec_copy), record)
        deleted = delete_keys(store) if store is not None else 0
    except Exception as exc:  # Redis gone, file unreadable: down still completes
        report(f"warning: could not delete the GCS keys from {where}: "
               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
               f"delete keys matching 'RAY{record.redis_namespace}@*' by hand")
        return
    report(f"deleted {deleted} GCS key(s) from {where}")
    record.redis_namespace = None
    cluster.save(record)


def _session_is_ours(sid: int, marker: str) -> bool:
    """A recorded session leader that is alive must still carry our marker (else its
    PID was reused, and then our session is empty); a dead leader's session is ours."""
    return not procs.is_alive(sid) or procs.environ_marker(sid) == marker
