"""Where Prometheus finds a local cluster's metrics: a file_sd file per cluster.

``$RAYSCALE_HOME/prometheus/<cluster>.json`` is a Prometheus file service
discovery file (``file_sd_configs``): a list of target groups, each with its
``targets`` (``host:port``) and ``labels``. One ``prometheus.yml`` entry with
``files: [$RAYSCALE_HOME/prometheus/*.json]`` scrapes every local cluster, and
Prometheus follows the files as they change (docs/observability.md)::

    [{"targets": ["127.10.0.2:41877"],
      "labels": {"job": "rayscale-autoscaler", "ray_io_cluster": "demo", ...}},
     {"targets": ["127.10.0.2:40211"],
      "labels": {"job": "ray", "ray_io_cluster": "demo", "rayscale_component": "dashboard"}},
     {"targets": ["127.10.0.2:39001", ...],                 # only with Ray's node metrics on
      "labels": {"job": "ray", "ray_io_cluster": "demo", "ray_io_group": "headgroup", ...}}]

- the autoscaler's ``/metrics`` (``rayscale_*``), job ``rayscale-autoscaler``;
- the Ray dashboard's own metrics (``DASHBOARD_METRIC_PORT`` on the head), job
  ``ray`` as in Ray's own Prometheus config;
- each Ray node's metrics export port (the head's and every started worker's),
  job ``ray``, one target group per worker group (``ray_io_group``), only when
  the cluster was started with Ray's node metrics on
  (``RAY_enable_metrics_collection=1`` in the environment of ``rayscale up``):
  local mode turns them off, because Ray's metrics agent serves them on
  ``0.0.0.0`` without the cluster's token (docs/security.md).

``ray_io_cluster`` is the label KubeRay's PodMonitors give Ray's pods, so one
dashboard variable selects a cluster in both modes. `rayscale up` writes the
file, the cluster's autoscaler rewrites it as nodes come and go, `down`
removes it. It is written atomically (temp file + rename), private to the user
like the rest of ``$RAYSCALE_HOME``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rayscale.labels import HEAD_GROUP
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord
from rayscale.paths import write_private

SD_DIR = "prometheus"
AUTOSCALER_JOB = "rayscale-autoscaler"
#: Ray's own job name (the prometheus.yml Ray writes into a session's directory)
RAY_JOB = "ray"
CLUSTER_LABEL = "ray_io_cluster"  # KubeRay's PodMonitor relabelling of ray.io/cluster
GROUP_LABEL = "ray_io_group"
#: the environment variable that turns Ray's metrics agent on or off (local mode: off)
RAY_METRICS_ENV = "RAY_enable_metrics_collection"
EXPORT_PORT_FLAG = "--metrics-export-port="


def sd_file(cluster: ClusterDir) -> Path:
    """``$RAYSCALE_HOME/prometheus/<cluster>.json``."""
    return cluster.root.parent.parent / SD_DIR / f"{cluster.name}.json"


def ray_node_metrics(env: Mapping[str, str]) -> bool:
    """Whether Ray's node metrics are on in this environment (Ray reads the variable
    as a boolean: ``1`` or ``true``; local mode's default is ``0``)."""
    return env.get(RAY_METRICS_ENV, "0").strip().lower() in ("1", "true")


def export_port(argv: Iterable[str]) -> int | None:
    """The ``--metrics-export-port`` of a `ray start` argument list (None: not there)."""
    for arg in argv:
        if arg.startswith(EXPORT_PORT_FLAG):
            value = arg[len(EXPORT_PORT_FLAG):]
            return int(value) if value.isdigit() and int(value) > 0 else None
    return None


def target_groups(record: ClusterRecord, nodes: Iterable[NodeRecord]) -> list[dict[str, Any]]:
    """The file's content for a cluster and its node records."""
    cluster = {CLUSTER_LABEL: record.name}
    groups: list[dict[str, Any]] = []
    if record.metrics_port:
        groups.append({"targets": [f"{record.head_ip}:{record.metrics_port}"],
                       "labels": {"job": AUTOSCALER_JOB, **cluster, "rayscale_mode": "local"}})
    if record.dashboard_metrics_port:
        groups.append({"targets": [f"{record.head_ip}:{record.dashboard_metrics_port}"],
                       "labels": {"job": RAY_JOB, **cluster, "rayscale_component": "dashboard"}})
    if not record.ray_node_metrics:
        return groups
    by_group: dict[str, list[str]] = {}
    if record.head_metrics_export_port:
        by_group[HEAD_GROUP] = [f"{record.head_ip}:{record.head_metrics_export_port}"]
    for node in sorted(nodes, key=lambda n: n.index):
        if node.state in ("started", "stopping") and node.metrics_export_port:
            by_group.setdefault(node.group, []).append(f"{node.ip}:{node.metrics_export_port}")
    for group in sorted(by_group, key=lambda g: (g != HEAD_GROUP, g)):
        groups.append({"targets": by_group[group],
                       "labels": {"job": RAY_JOB, **cluster, "rayscale_component": "node",
                                  GROUP_LABEL: group}})
    return groups


def render(groups: list[dict[str, Any]]) -> str:
    return json.dumps(groups, indent=1, sort_keys=True) + "\n"


def write(cluster: ClusterDir, record: ClusterRecord | None = None,
          nodes: Iterable[NodeRecord] | None = None) -> str:
    """Write the cluster's file now (atomically); return what was written."""
    record = record if record is not None else cluster.load()
    text = render(target_groups(record, cluster.nodes() if nodes is None else nodes))
    write_private(sd_file(cluster), text)
    return text


def remove(cluster: ClusterDir) -> None:
    sd_file(cluster).unlink(missing_ok=True)


class ScrapeFile:
    """The autoscaler's copy of the file: rewritten when the cluster's targets change.

    :meth:`update` is called after every round with the ids of the nodes the
    round saw; it reads the records and writes only when those ids changed
    (with Ray's node metrics on; otherwise nodes have no target), and at most
    every ``check_s`` it compares the file on disk with what it should hold (a
    `rayscale up` that wrote it meanwhile, a file deleted by hand).
    """

    def __init__(self, cluster: ClusterDir, check_s: float = 30.0) -> None:
        self.cluster = cluster
        self.check_s = check_s
        self._written: str | None = None
        self._nodes: frozenset[str] = frozenset()
        self._node_targets = True  # until the record says (Ray's node metrics on?)
        self._checked = 0.0

    def update(self, node_ids: Iterable[str] = (), now: float | None = None) -> bool:
        """Rewrite the file if it is out of date; whether it was written. ``node_ids``:
        what identifies the nodes' targets (the autoscaler adds each node's status)."""
        now = time.monotonic() if now is None else now
        ids = frozenset(node_ids)
        due = now - self._checked >= self.check_s
        if self._written is not None and not due and (
                ids == self._nodes or not self._node_targets):
            return False
        record = self.cluster.load()
        self._node_targets = record.ray_node_metrics
        self._nodes = ids
        text = render(target_groups(record, self.cluster.nodes()
                                    if record.ray_node_metrics else ()))
        if due:
            self._checked = now
            try:
                on_disk: str | None = sd_file(self.cluster).read_text()
            except OSError:
                on_disk = None
            if on_disk == text:
                self._written = text
                return False
        elif text == self._written:
            return False
        write_private(sd_file(self.cluster), text)
        self._written = text
        return True
