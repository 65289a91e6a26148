"""`rayscale autoscaler`: the loop of one cluster.

Local mode (``--cluster NAME``, started by `rayscale up`) or Kubernetes mode
(``--cluster NAME --namespace NS``, the head pod's sidecar): the same loop and
planner, with the local provider or the RayCluster-CR provider.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    from rayscale.autoscaler.loop import Autoscaler, LoopOptions
    from rayscale.observe.ray_state import RayObserver

log = logging.getLogger("rayscale.autoscaler")
T = TypeVar("T")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def autoscaler_command(
    cluster: str = typer.Option(..., "--cluster", help="Cluster name"),
    namespace: str = typer.Option(None, help="Kubernetes mode: the RayCluster's namespace"),
    gcs_address: str = typer.Option(None, help="Kubernetes mode: the head's GCS (ip:port)"),
    metrics_port: int = typer.Option(0, help="Port of /metrics (0: any)"),
    tick: float = typer.Option(0.25, help="Seconds between rounds"),
    launch_timeout: float = typer.Option(
        None, help="Seconds a launch may take to register [env RAYSCALE_LAUNCH_TIMEOUT_S, 60]"
    ),
    backoff: float = typer.Option(
        None, help="First backoff after a failed launch [env RAYSCALE_BACKOFF_S, 10]"
    ),
) -> None:
    """Run the autoscaler loop until SIGTERM."""
    from rayscale.autoscaler.loop import LoopOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = LoopOptions(
        tick_s=tick,
        launch_timeout_s=launch_timeout or _env_float("RAYSCALE_LAUNCH_TIMEOUT_S", 60.0),
        backoff_s=backoff or _env_float("RAYSCALE_BACKOFF_S", 10.0),
    )
    if namespace:
        loop = _kubernetes_loop(cluster, namespace, gcs_address, metrics_port, options)
    else:
        loop = _local_loop(cluster, options)

    def on_term(signum: int, frame: FrameType | None) -> None:
        loop.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    loop.run()
    loop.close()


def _local_loop(cluster: str, options: LoopOptions) -> Autoscaler:
    from rayscale.autoscaler.events import EventLog
    from rayscale.autoscaler.loop import Autoscaler
    from rayscale.autoscaler.metrics import AutoscalerMetrics
    from rayscale.local.store import ClusterDir
    from rayscale.observe.memory import DashboardMemoryProbe
    from rayscale.observe.ray_state import RayObserver
    from rayscale.providers.local import LocalProvider
    from rayscale.spec import load_cluster_spec

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
        memory_probe=DashboardMemoryProbe(record.dashboard_url),
        on_status=publish,
    )


def _kubernetes_loop(
    cluster: str, namespace: str, gcs_address: str | None, metrics_port: int,
    options: LoopOptions,
) -> Autoscaler:
    from lightkube import Client

    from rayscale.autoscaler.events import Event, EventLog
    from rayscale.autoscaler.loop import Autoscaler
    from rayscale.autoscaler.metrics import AutoscalerMetrics
    from rayscale.providers.kuberay import KubeRayProvider

    provider = KubeRayProvider(Client(field_manager="rayscale-autoscaler"), cluster, namespace)
    spec = _retry(provider.spec, "the RayCluster")
    address = gcs_address or f"{provider.cluster()['status']['head']['podIP']}:6379"
    head_ip = address.rsplit(":", 1)[0]
    observer = _retry(lambda: _ready_observer(address), f"the GCS at {address}")
    metrics = AutoscalerMetrics()
    port = metrics.serve(head_ip, metrics_port)
    log.info("autoscaler for %s/%s: GCS %s, metrics on %s:%s", namespace, cluster, address,
             head_ip, port)

    def echo(event: Event) -> None:
        log.info("%s %s", event.kind, event.message)

    from rayscale.observe.memory import DashboardMemoryProbe

    return Autoscaler(
        spec,
        provider,
        observer,
        head_ip=head_ip,
        events=EventLog(None, echo=echo),
        metrics=metrics,
        options=options,
        memory_probe=DashboardMemoryProbe(f"http://{head_ip}:8265"),
        refresh_spec=provider.spec,
    )


def _ready_observer(address: str) -> RayObserver:
    from rayscale.observe.ray_state import RayObserver

    observer = RayObserver(address)
    observer.observe()
    return observer


def _retry(make: Callable[[], T], what: str, timeout_s: float = 300.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return make()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for %s (%r)", what, exc)
            time.sleep(2)
