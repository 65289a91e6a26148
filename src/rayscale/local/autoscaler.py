"""The autoscaler of one local cluster: its loop wired to the local provider and state dir.

`rayscale up` starts ``rayscale autoscaler --cluster NAME`` in the background,
which builds its loop here.
"""

from __future__ import annotations

import logging
import os

from rayscale import rayauth
from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler, LoopOptions
from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.local.provider import LocalProvider
from rayscale.local.store import ClusterDir
from rayscale.observe.memory import DashboardMemoryProbe
from rayscale.observe.ray_state import RayObserver
from rayscale.spec import load_cluster_spec

log = logging.getLogger("rayscale.autoscaler")


def local_autoscaler(cluster: str, options: LoopOptions) -> Autoscaler:
    cdir = ClusterDir(cluster)
    record = cdir.load()
    spec = load_cluster_spec(cdir.spec_copy)
    metrics = AutoscalerMetrics()
    record.metrics_port = metrics.serve(record.head_ip, 0)
    cdir.save(record)
    log.info("autoscaler for %s: metrics on %s:%s", cluster, record.head_ip, record.metrics_port)

    def publish(status: dict[str, object]) -> None:
        status["metrics"] = f"http://{record.head_ip}:{record.metrics_port}/metrics"
        status["autoscaler_pid"] = os.getpid()
        cdir.write_status(status)

    return Autoscaler(
        spec,
        LocalProvider(spec, cdir),
        RayObserver(record.address),
        head_ip=record.head_ip,
        events=EventLog(cdir.events_file),
        metrics=metrics,
        options=options,
        memory_probe=DashboardMemoryProbe(
            record.dashboard_url, headers=rayauth.bearer_headers(record.token_file)
        ),
        on_status=publish,
    )
