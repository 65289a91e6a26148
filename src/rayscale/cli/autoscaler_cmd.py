"""`rayscale autoscaler`: the loop of one cluster.

Local mode (``--cluster NAME``, started by `rayscale up`) or Kubernetes mode
(``--cluster NAME --namespace NS``, the head pod's sidecar): the same loop and
planner, with the local provider or the RayCluster-CR provider.

Where ``/metrics`` listens: in local mode on the cluster's own loopback address
(the head's IP, 127.<slot>.0.2), always. In Kubernetes mode on ``--metrics-host``,
by default the head pod's IP (the host of ``--gcs-address``), so that Prometheus
in the pod network can scrape it; ``--metrics-host 127.0.0.1`` keeps it inside
the pod. See docs/security.md.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from types import FrameType

import typer

log = logging.getLogger("rayscale.autoscaler")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _check_ip(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise typer.BadParameter(f"{host!r} is not an IP address", param_hint="--metrics-host"
                                 ) from None


def autoscaler_command(
    cluster: str = typer.Option(..., "--cluster", help="Cluster name"),
    namespace: str = typer.Option(None, help="Kubernetes mode: the RayCluster's namespace"),
    gcs_address: str = typer.Option(None, help="Kubernetes mode: the head's GCS (ip:port)"),
    metrics_port: int = typer.Option(0, help="Port of /metrics (0: any)"),
    metrics_host: str = typer.Option(
        None, help="Kubernetes mode: IP address /metrics listens on [default: the head pod's "
        "IP, from --gcs-address]. Local mode always uses the cluster's loopback address."
    ),
    tick: float = typer.Option(
        1.0, min=0.01, envvar="RAYSCALE_TICK_S", help="Seconds between full rounds at most"
    ),
    probe: float = typer.Option(
        0.1, min=0.0, envvar="RAYSCALE_PROBE_S",
        help="Seconds between looks at Ray's demand and nodes; a change starts a round "
        "(0: no looks, a round every --tick)"
    ),
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
    # one INFO line per API request (several a second) would bury what matters
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    options = LoopOptions(
        tick_s=tick,
        probe_s=probe,
        launch_timeout_s=launch_timeout or _env_float("RAYSCALE_LAUNCH_TIMEOUT_S", 60.0),
        backoff_s=backoff or _env_float("RAYSCALE_BACKOFF_S", 10.0),
    )
    if metrics_host is not None:
        _check_ip(metrics_host)
    if namespace:
        from rayscale.autoscaler.sidecar import kubernetes_autoscaler

        loop = kubernetes_autoscaler(cluster, namespace, gcs_address, metrics_port, options,
                                     metrics_host=metrics_host)
    else:
        if metrics_host is not None:
            raise typer.BadParameter(
                "local mode serves /metrics on the cluster's loopback address; "
                "--metrics-host is for Kubernetes mode (--namespace)", param_hint="--metrics-host")
        from rayscale.local.autoscaler import local_autoscaler

        loop = local_autoscaler(cluster, options)

    def on_term(signum: int, frame: FrameType | None) -> None:
        loop.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    loop.run()
    loop.close()


