"""A local cluster's state on disk: what `up` started and what the autoscaler launched.

Layout under ``$RAYSCALE_HOME`` (default ``~/.rayscale``)::

    clusters/<name>/cluster.json      ClusterRecord: addresses, ports, PIDs
    clusters/<name>/nodes/<id>.json   NodeRecord per launched worker
    clusters/<name>/events.jsonl      the scaling event log
    clusters/<name>/status.json       the autoscaler's last view (for `status`)
    clusters/<name>/auth_token        Ray's token for this cluster (mode 0600)
    clusters/<name>/serve.json        the Serve config last applied (`rayscale serve deploy`)
    clusters/<name>/logs/             head, autoscaler and node logs (kept by `down`)
    clusters/<name>/logs/nodes.jsonl  every worker launched: id, group, index (`rayscale logs`)
    clusters/<name>/logs/jobs/        the Ray jobs' driver logs, copied there by `down`
    clusters/<name>/gcs/              the GCS's embedded store (``rayscale up --ha``)
                                      (with Redis: keys ``RAY<namespace>@*`` there)

A node record is written *before* its process is spawned, so a crash at any
moment leaves either a record to adopt or clean up, never an unknown process.
Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rayscale.paths import append_private, private_dir, rayscale_home, write_private

# queued: waiting for a start slot (rayscale.local.pacing); launching: being spawned
NodeState = Literal["queued", "launching", "started", "stopping"]




class ClusterRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    id: str  # the environment marker shared by every process of the cluster
    spec_file: str
    slot: int  # the cluster's loopback block: 127.<slot>.0.0/16
    head_ip: str
    gcs_port: int
    dashboard_port: int
    client_port: int
    temp_dir: str
    head_pid: int | None = None
    autoscaler_pid: int | None = None
    metrics_port: int | None = None
    # Ray's token file (every node, the autoscaler and drivers use it); None: auth off
    token_file: str | None = None
    next_node: int = 0
    created: float
    # GCS fault tolerance: "rocksdb" (Ray's embedded store under gcs/), "redis" (an
    # external Redis), None: off
    gcs_storage: str | None = None
    # the Redis (host:port, never the password) and the GCS's storage namespace there;
    # the namespace is cleared once `down` deleted its keys
    redis_address: str | None = None
    redis_namespace: str | None = None
    head_restarts: int = 0  # heads started again after the head process died
    head_restarted_at: float | None = None
    # Prometheus (local/scrape.py): the dashboard's own metrics port (DASHBOARD_METRIC_PORT)
    # and the head's metrics export port; whether Ray's node metrics are on (off unless
    # `up` ran with RAY_enable_metrics_collection=1: docs/security.md)
    dashboard_metrics_port: int | None = None
    head_metrics_export_port: int | None = None
    ray_node_metrics: bool = False

    @property
    def ha(self) -> bool:
        return self.gcs_storage is not None

    def head_temp_dir(self) -> str:
        """The head's Ray temp dir; a restarted head gets a fresh one (its session
        name is the old head's, read back from the store)."""
        return self.node_temp_dir("head" if not self.head_restarts else
                                  f"head{self.head_restarts}")

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.gcs_port}"

    def node_temp_dir(self, node: str) -> str:
        """Each node its own Ray temp dir: nodes sharing one race for socket names."""
        return f"{self.temp_dir}/{node}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head_ip}:{self.dashboard_port}"


class NodeRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    index: int  # the cluster-wide launch counter: picks the IP and temp dir
    group: str
    ip: str
    state: NodeState = "launching"
    pid: int | None = None
    # a node forked by the zygote: its process's start time (/proc/PID/stat), which
    # with the pid names it (its command line is the zygote's, not `ray start`'s)
    start_time: int | None = None
    launched_at: float
    drained_at: float | None = None
    metrics_export_port: int | None = None  # Ray's metrics agent (if metrics are on)


def _write_atomic(path: Path, text: str) -> None:
    write_private(path, text)  # 0600 in 0700 directories, temp file + rename


class ClusterDir:
    """Files of one named local cluster."""

    def __init__(self, name: str, home: Path | None = None) -> None:
        self.name = name
        self.root = (home or rayscale_home()) / "clusters" / name

    @property
    def record_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def spec_copy(self) -> Path:
        """The spec as it was at `up` (the autoscaler reads this, not the user's file)."""
        return self.root / "cluster.yaml"

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def node_index(self) -> Path:
        """Every worker launched in this cluster's life, one JSON line each (a stopped
        node's record is gone, its log and its group stay known: `rayscale logs`)."""
        return self.logs / "nodes.jsonl"

    @property
    def token_file(self) -> Path:
        return self.root / "auth_token"

    @property
    def serve_file(self) -> Path:
        """What `rayscale serve deploy` last applied (local/serve.py): its HTTP address."""
        return self.root / "serve.json"

    @property
    def gcs_store(self) -> Path:
        """Ray's embedded GCS store (RocksDB) of an HA cluster: survives the head."""
        return self.root / "gcs"

    def exists(self) -> bool:
        return self.record_file.exists()

    def create(self) -> None:
        """The cluster's directory (and ``$RAYSCALE_HOME``), private to this user."""
        private_dir(self.root.parent.parent)
        private_dir(self.root)

    def load(self) -> ClusterRecord:
        return ClusterRecord.model_validate_json(self.record_file.read_text())

    def save(self, record: ClusterRecord) -> None:
        _write_atomic(self.record_file, record.model_dump_json(indent=2))

    def nodes(self) -> list[NodeRecord]:
        out = []
        if self.nodes_dir.exists():
            for path in sorted(self.nodes_dir.glob("*.json")):
                try:
                    out.append(NodeRecord.model_validate_json(path.read_text()))
                except (OSError, ValueError):
                    continue  # a half-removed record; the next listing settles it
        return out

    def save_node(self, node: NodeRecord) -> None:
        _write_atomic(self.nodes_dir / f"{node.id}.json", node.model_dump_json())

    def index_node(self, node: NodeRecord) -> None:
        private_dir(self.logs)
        append_private(self.node_index, node.model_dump_json(
            include={"id", "index", "group", "ip", "launched_at"}) + "\n")

    def indexed_nodes(self) -> list[NodeRecord]:
        """The nodes of :attr:`node_index` in launch order (one per id)."""
        found: dict[str, NodeRecord] = {}
        try:
            lines = self.node_index.read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                node = NodeRecord.model_validate_json(line)
            except ValueError:
                continue  # a line cut short by a crash
            found.setdefault(node.id, node)
        return sorted(found.values(), key=lambda n: n.index)

    def forget_node(self, node_id: str) -> None:
        (self.nodes_dir / f"{node_id}.json").unlink(missing_ok=True)

    def write_status(self, status: dict[str, Any]) -> None:
        _write_atomic(self.status_file, json.dumps(status, indent=1, default=str))

    def read_status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return data


def all_clusters(home: Path | None = None) -> Iterator[ClusterDir]:
    base = (home or rayscale_home()) / "clusters"
    if base.exists():
        for path in sorted(base.iterdir()):
            if (path / "cluster.json").exists():
                yield ClusterDir(path.name, home)


def free_slot(home: Path | None = None) -> int:
    """A loopback block 127.<slot>.0.0/16 no other known cluster uses."""
    taken = set()
    for cluster in all_clusters(home):
        try:
            taken.add(cluster.load().slot)
        except (OSError, ValueError):
            continue
    for slot in range(10, 250):
        if slot not in taken:
            return slot
    raise RuntimeError("no free loopback block for another cluster")


def head_ip(slot: int) -> str:
    return f"127.{slot}.0.2"


def worker_ip(slot: int, index: int) -> str:
    """The n-th worker's own address: 127.<slot>.<1 + n // 250>.<2 + n % 250>."""
    return f"127.{slot}.{1 + index // 250}.{2 + index % 250}"



def now() -> float:
    return time.time()
