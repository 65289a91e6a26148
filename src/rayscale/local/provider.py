"""Worker nodes as local `ray start --block` processes, each on its own loopback IP.

Each node's `ray start` runs in a child forked from the cluster's zygote (a
process that imported Ray once, zygote.py), or, with ``RAYSCALE_ZYGOTE=0`` or
when the zygote fails, as a `ray start` process of its own.

Each node gets its own process group (stopped by PID, never by name), its own
address 127.<slot>.x.y, and Ray labels naming its group and our node id, so a
Ray node is matched to the process that runs it without guessing.

Launches are paced (:mod:`rayscale.local.pacing`): at most ``parallel_starts``
nodes are starting at once; the others wait as ``queued`` records (pending to
the autoscaler, so never launched twice) and start, oldest first, as earlier
ones come up or exit. A node is up once Ray registered it (the loop says so,
:meth:`LocalProvider.registered`) or its `ray start` printed "Ray runtime
started", whichever comes first: the line comes 0.1-1 s after the node can
take tasks.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from rayscale import cloudprobe, procs, rayauth
from rayscale.api import RayCluster
from rayscale.labels import GROUP_LABEL, NODE_LABEL
from rayscale.local.scrape import export_port
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord, now, worker_ip
from rayscale.local.zygote_client import Zygote, ZygoteError
from rayscale.ports import free_port
from rayscale.providers.base import ProviderNode, ProviderState
from rayscale.raystart import RayStart, labels_flag, node_labels, ray_start_argv


def ray_executable() -> str:
    """The `ray` script next to the running Python (the project's venv)."""
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def node_env(record: ClusterRecord, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for every process of a local cluster (the marker, auth, PATH)."""
    env = dict(os.environ if base is None else base)
    env[procs.MARKER] = record.id
    # the cluster's own token (or auth off), whatever the caller's environment says
    rayauth.apply_auth_env(env, record.token_file)
    # nothing leaves the machine: no usage report, not even Ray's "disabled" notice
    env.update(cloudprobe.NO_REPORT_ENV)
    # Ray's metrics agent would serve Prometheus on 0.0.0.0 without the token, and
    # Ray has no option to bind it elsewhere (docs/security.md). Node stats, which
    # the memory target reads, do not need it.
    env.setdefault("RAY_enable_metrics_collection", "0")
    # The GCS tells drivers which autoscaler API to use; with v2, request_resources
    # lands in the cluster resource constraints rayscale reads (v1 used a KV key).
    env["RAY_enable_autoscaler_v2"] = "1"
    # Workers are stopped only after Ray accepted an idle drain, and `down` means
    # now: no 30 s graceful-drain wait when a node's process group is stopped.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    # drivers started by Ray jobs must find the Python that has Ray installed
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


# Workers of an HA cluster wait this long for a GCS that went away (Ray's default:
# 60 s) before their raylet exits: long enough to outlive a head restart.
GCS_RECONNECT_TIMEOUT_S = 600


def ha_env(record: ClusterRecord) -> dict[str, str]:
    """What every Ray node of an HA cluster gets (none without HA)."""
    if not record.ha:
        return {}
    return {"RAY_gcs_rpc_server_reconnect_timeout_s": str(GCS_RECONNECT_TIMEOUT_S)}


#: Each Ray node's own address, in its environment (and so in every process Ray starts
#: there: a job's driver too). ``rayscale.driver.connect()`` passes it to ``ray.init``:
#: a plain ``ray.init()`` on a machine with several raylets attaches to the head's
#: (Ray prefers the head among the raylets it finds on the host), which dies with it.
NODE_IP_ENV = "RAYSCALE_NODE_IP"


def ray_node_type(group: str, node_id: str | None = None) -> dict[str, str]:
    """Ray's node type and instance id of a node, as KubeRay sets them for autoscaler v2.

    `ray status` and the dashboard name nodes by them (not ``node_<id>``).
    """
    env = {"RAY_NODE_TYPE_NAME": group}
    if node_id is not None:
        env["RAY_CLOUD_INSTANCE_ID"] = node_id
    return env


LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # per node unless the spec sets one


def local_overrides(ip: str, resources: Mapping[str, float]) -> dict[str, str]:
    """Ports that default to fixed numbers get free ones; a modest object store."""
    out = {
        "dashboard-agent-listen-port": str(free_port()),
        "metrics-export-port": str(free_port()),
    }
    if "object_store_memory" not in resources:
        out["object-store-memory"] = str(LOCAL_OBJECT_STORE_BYTES)
    return out


def worker_labels(group_labels: Mapping[str, str], group: str, node_id: str) -> dict[str, str]:
    """A worker's Ray labels: its group's ``labels`` and rayscale's two."""
    return node_labels(group_labels, {GROUP_LABEL: group, NODE_LABEL: node_id})


def labels_arg(group_labels: Mapping[str, str], group: str, node_id: str) -> str:
    """The exact `--labels=` argument of a node: it identifies its process.

    It holds the group's labels as the spec says them (the spec of a local
    cluster is the copy `up` made, fixed for the cluster's life), so it is the
    argument the node was started with.
    """
    return labels_flag(worker_labels(group_labels, group, node_id))


log = logging.getLogger(__name__)

#: What `ray start` prints once the node runs (its raylet registered with the GCS).
STARTED_LINE = b"Ray runtime started."


class LocalProvider:
    """Launch and stop worker nodes of one local cluster."""

    def __init__(self, spec: RayCluster, cluster: ClusterDir,
                 parallel_starts: int | None = None, zygote: bool = False,
                 fork_daemons: bool = False) -> None:
        self.spec = spec
        self.cluster = cluster
        #: start nodes by forking the cluster's zygote (zygote.py), else `ray start`
        self.use_zygote = zygote
        #: forked nodes fork Ray's agents and log monitor too (agent_server.py)
        self.fork_daemons = fork_daemons
        self._zygote: Zygote | None = None
        #: nodes that may be starting at once (None: no limit)
        self.parallel_starts = parallel_starts
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._up: set[str] = set()  # nodes whose `ray start` said they run
        # held while the cluster record is read and written (the head keeper too)
        self.record_lock = threading.Lock()
        self._start_lock = threading.Lock()

    def launch(self, group: str, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            with self.record_lock:
                record = self.cluster.load()
                index = record.next_node
                record.next_node += 1
                self.cluster.save(record)
            node = NodeRecord(
                id=f"{group}-{index}", index=index, group=group, ip=worker_ip(record.slot, index),
                launched_at=now(), state="queued",
            )
            # the record exists before the process does: a crash here leaves no orphan
            self.cluster.save_node(node)
            self.cluster.index_node(node)  # its log stays findable by group once stopped
            ids.append(node.id)
        self._start_due(self.cluster.nodes())
        return ids

    def _start_due(self, records: list[NodeRecord]) -> list[NodeRecord]:
        """Start queued nodes, oldest first, while fewer than ``parallel_starts`` are
        starting; ``records`` with the started ones updated."""
        with self._start_lock:
            queued = sorted((r for r in records if r.state == "queued"), key=lambda r: r.index)
            if not queued:
                return records
            free = len(queued)
            if self.parallel_starts is not None:
                free = self.parallel_starts - sum(1 for r in records if self._starting(r))
            started = {}
            for node in queued[:max(0, free)]:
                started[node.id] = self._spawn(node)
            return [started.get(r.id, r) for r in records]

    def start_zygote(self) -> None:
        """Start the zygote now (it imports Ray for a few seconds), so the first launch
        does not wait for it."""
        if self.use_zygote and self._zygote is None:
            record = self.cluster.load()
            self._zygote = Zygote({**node_env(record), **ha_env(record)},
                                  self.cluster.logs / "zygote.log")

    def _spawn(self, node: NodeRecord) -> NodeRecord:
        record = self.cluster.load()
        # "launching" without a pid until the process runs: a crash in between is found
        # by its labels or dropped (:meth:`nodes`), never started twice
        self.cluster.save_node(node.model_copy(update={"state": "launching"}))
        argv = self._argv(record, node)
        env = {**ray_node_type(node.group, node.id), NODE_IP_ENV: node.ip}
        node_log = self.cluster.logs / f"{node.id}.log"
        started_at: int | None = None
        pid: int | None = None
        if self.use_zygote:
            try:
                self.start_zygote()
                assert self._zygote is not None
                daemons = (record.node_temp_dir(f"w{node.index}") + "/rayscale"
                           if self.fork_daemons else None)
                pid, started_at = self._zygote.spawn(argv[1:], env, node_log, daemons)
            except ZygoteError as exc:
                # `ray start` from now on; the reason is in the autoscaler's log
                log.warning("the zygote could not start %s: %s; starting nodes with "
                            "`ray start` from now on", node.id, exc)
                self.use_zygote = False
                self._close_zygote()
        if pid is None:
            proc = procs.spawn(argv, {**node_env(record), **ha_env(record), **env}, node_log)
            self._children[node.id] = proc
            pid = proc.pid
        # launched now: the launch timeout counts from here, not from the queue
        started = node.model_copy(update={"pid": pid, "start_time": started_at,
                                          "state": "started", "launched_at": now(),
                                          "metrics_export_port": export_port(argv)})
        self.cluster.save_node(started)
        return started

    def _close_zygote(self) -> None:
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None

    def _alive(self, node: NodeRecord) -> bool:
        """The node's process runs and is still the one we started (PIDs are reused)."""
        if node.pid is None:
            return False
        if node.start_time is not None:
            return procs.is_alive(node.pid) and procs.start_time(node.pid) == node.start_time
        return procs.is_alive(node.pid, self._labels_arg(node))

    def _starting(self, node: NodeRecord) -> bool:
        """Spawned, alive, and its `ray start` has not said it runs yet."""
        if node.state != "started" or node.pid is None or node.id in self._up:
            return False
        try:
            with open(self.cluster.logs / f"{node.id}.log", "rb") as log_file:
                if STARTED_LINE in log_file.read():
                    self._up.add(node.id)
                    return False
        except OSError:
            pass
        return self._alive(node)

    def _argv(self, record: ClusterRecord, node: NodeRecord) -> list[str]:
        group = self.spec.group(node.group)
        start = RayStart(
            node_ip=node.ip,
            resources=group.ray_resources,
            address=record.address,
            temp_dir=record.node_temp_dir(f"w{node.index}"),
            labels=worker_labels(group.labels, node.group, node.id),
            overrides=local_overrides(node.ip, group.ray_resources),
        )
        argv = ray_start_argv(ray_executable(), group.ray_start_params, start)
        assert self._labels_arg(node) in argv
        return argv

    def _labels_arg(self, node: NodeRecord) -> str:
        """The `--labels=` argument ``node``'s process was started with."""
        try:
            group_labels = self.spec.group(node.group).labels
        except KeyError:  # not a group of this spec: nothing of ours to find
            group_labels = {}
        return labels_arg(group_labels, node.group, node.id)

    def terminate(self, node_id: str) -> None:
        record = next((n for n in self.cluster.nodes() if n.id == node_id), None)
        if record is None:
            return
        self.cluster.save_node(record.model_copy(update={"state": "stopping"}))
        if record.pid is None:
            record = self._found(record) or record
        if self._alive(record):
            assert record.pid is not None
            procs.stop_group(record.pid)
        child = self._children.pop(node_id, None)
        if child is not None:
            child.poll()
        self._up.discard(node_id)
        self.cluster.forget_node(node_id)

    def registered(self, node_id: str) -> None:
        """Ray registered ``node_id``: its start slot is free; start the next queued node."""
        self._up.add(node_id)
        self._start_due(self.cluster.nodes())

    def forget(self, node_id: str) -> None:
        self._children.pop(node_id, None)
        self._up.discard(node_id)
        self.cluster.forget_node(node_id)

    def nodes(self) -> list[ProviderNode]:
        out = []
        for record in self._start_due(self.cluster.nodes()):
            if record.state == "queued":  # not launched yet: pending, and never timed out
                out.append(ProviderNode(record.id, record.group, "launching", now(), record.ip))
                continue
            if record.pid is None:
                # crashed between writing the record and spawning: find it or drop it
                found = self._found(record)
                if found is None and now() - record.launched_at > 5:
                    self.cluster.forget_node(record.id)
                    continue
                if found is not None:
                    record = found.model_copy(update={"state": "started"})
                    self.cluster.save_node(record)
            child = self._children.get(record.id)
            if child is not None:
                child.poll()  # reap our own exited children
            alive = self._alive(record)
            state: ProviderState = "dead"
            if alive or record.pid is None:
                state = "started" if record.state == "started" else (
                    "stopping" if record.state == "stopping" else "launching")
            out.append(
                ProviderNode(record.id, record.group, state, record.launched_at, record.ip,
                             record.pid)
            )
        return out

    def _found(self, record: NodeRecord) -> NodeRecord | None:
        """``record`` with the pid (and start time) of its node's process, found among the
        cluster's processes: a `ray start` by its ``--labels=`` argument, a node forked
        by the zygote by its raylet's ``--node_ip_address`` (each node has its own IP),
        whose process group the node's process leads. None: not running."""
        marker = self.cluster.load().id
        wanted = self._labels_arg(record)
        raylet_ip = f"--node_ip_address={record.ip}"
        for pid in procs.pids_with_marker(marker):
            args = procs.cmdline(pid)
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if wanted in args and group == pid:
                return record.model_copy(update={"pid": pid, "start_time": None})
            if raylet_ip in args and group != pid and procs.environ_marker(group) == marker:
                return record.model_copy(update={"pid": group,
                                                 "start_time": procs.start_time(group)})
        return None
