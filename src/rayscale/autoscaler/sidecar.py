"""The autoscaler sidecar of a RayCluster on Kubernetes: the loop wired to the CR provider.

The operator runs ``rayscale autoscaler --cluster NAME --namespace NS
--gcs-address IP:PORT`` in the head pod; the loop acts only through the
RayCluster (``replicas`` and ``scaleStrategy.workersToDelete``).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lightkube import Client

from rayscale.autoscaler.events import EventLog, ScalingEvent
from rayscale.autoscaler.kube_status import StatusConfigMap
from rayscale.autoscaler.loop import Autoscaler, LoopOptions
from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.labels import DEFAULT_HEAD_PORTS
from rayscale.observe.memory import DashboardMemoryProbe
from rayscale.observe.ray_state import RayObserver
from rayscale.providers.kuberay import KubeRayProvider
from rayscale.rayauth import headers_from_env, is_token_mode

log = logging.getLogger("rayscale.autoscaler")
T = TypeVar("T")


def kubernetes_autoscaler(
    cluster: str, namespace: str, gcs_address: str | None, metrics_port: int,
    options: LoopOptions, metrics_host: str | None = None,
) -> Autoscaler:
    """The loop of one RayCluster; ``/metrics`` on ``metrics_host`` (default: the head
    pod's IP, where Prometheus in the pod network reaches it) and ``metrics_port``."""

    client = Client(field_manager="rayscale-autoscaler")
    provider = KubeRayProvider(client, cluster, namespace)
    spec = _retry(provider.cluster, "the RayCluster")
    address = gcs_address or _retry(provider.head_gcs_address, "the head pod's address")
    head_ip = address.rsplit(":", 1)[0]
    observer = _retry(lambda: _ready_observer(address), f"the GCS at {address}")
    metrics = AutoscalerMetrics()
    host = metrics_host or head_ip
    port = metrics.serve(host, metrics_port)
    log.info("autoscaler for %s/%s: GCS %s, metrics on %s:%s, Ray token auth %s", namespace,
             cluster, address, host, port, "on" if is_token_mode(os.environ) else "off")

    def echo(event: ScalingEvent) -> None:
        log.info("%s %s", event.kind, event.message)

    # `rayscale status NAME -n NS` and the operator's history read this ConfigMap
    status_map = StatusConfigMap(client, cluster, namespace, spec.metadata.uid)
    metrics_url = f"http://{host}:{port}/metrics"

    def publish(status: dict[str, Any]) -> None:
        status["metrics"] = metrics_url
        status_map.publish(status)

    return Autoscaler(
        spec,
        provider,
        observer,
        head_ip=head_ip,
        events=EventLog(None, echo=echo),
        metrics=metrics,
        options=options,
        # the GCS client takes the token from this process's environment by itself (the
        # operator sets RAY_AUTH_MODE and RAY_AUTH_TOKEN as on the Ray containers); the
        # dashboard's requests carry it in a header
        memory_probe=DashboardMemoryProbe(
            f"http://{head_ip}:{DEFAULT_HEAD_PORTS['dashboard']}",
            headers=functools.partial(headers_from_env, os.environ),
        ),
        refresh_spec=provider.cluster,
        on_status=publish,
    )


def _ready_observer(address: str) -> RayObserver:

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
