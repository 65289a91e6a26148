"""`rayscale autoscaler --cluster NAME`: the loop of one local cluster (started by `up`)."""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

import typer

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler, LoopOptions
from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.local.store import ClusterDir
from rayscale.observe.memory import DashboardMemoryProbe
from rayscale.observe.ray_state import RayObserver
from rayscale.providers.local import LocalProvider
from rayscale.spec import load_cluster_spec


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def autoscaler_command(
    cluster: str = typer.Option(..., "--cluster", help="Name of the local cluster"),
    tick: float = typer.Option(0.25, help="Seconds between rounds"),
    launch_timeout: float = typer.Option(
        None, help="Seconds a launch may take to register [env RAYSCALE_LAUNCH_TIMEOUT_S, 60]"
    ),
    backoff: float = typer.Option(
        None, help="First backoff after a failed launch [env RAYSCALE_BACKOFF_S, 10]"
    ),
) -> None:
    """Run the autoscaler loop for a local cluster until SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cdir = ClusterDir(cluster)
    record = cdir.load()
    spec = load_cluster_spec(cdir.spec_copy)
    metrics = AutoscalerMetrics()
    record.metrics_port = metrics.serve(record.head_ip, 0)
    cdir.save(record)
    options = LoopOptions(
        tick_s=tick,
        launch_timeout_s=launch_timeout or _env_float("RAYSCALE_LAUNCH_TIMEOUT_S", 60.0),
        backoff_s=backoff or _env_float("RAYSCALE_BACKOFF_S", 10.0),
    )

    def publish(status: dict[str, object]) -> None:
        status["metrics"] = f"http://{record.head_ip}:{record.metrics_port}/metrics"
        status["autoscaler_pid"] = os.getpid()
        cdir.write_status(status)

    loop = Autoscaler(
        spec,
        LocalProvider(spec, cdir),
        RayObserver(record.address),
        head_ip=record.head_ip,
        events=EventLog(cdir.events_file),
        metrics=metrics,
        options=options,
        memory_probe=DashboardMemoryProbe(record.dashboard_url),
        on_status=publish,
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        loop.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    logging.info("autoscaler for %s: metrics on %s:%s", cluster, record.head_ip,
                 record.metrics_port)
    loop.run()
    loop.close()
