"""`rayscale operator`: reconcile ray.io/v1 RayClusters (kopf + lightkube)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rayscale.operator.history import OperatorHistory


def operator_command(
    kubeconfig: Path = typer.Option(None, help="kubeconfig (default: in-cluster, $KUBECONFIG)"),
    namespace: list[str] = typer.Option(None, help="Watch only these namespaces (repeatable)"),
    shared_pod_network: bool = typer.Option(
        False, help="Pods share one network namespace (the dev cluster's virtual node): bind Ray "
        "to the pod IP and avoid fixed ports"),
    metrics_host: str = typer.Option("127.0.0.1", help="Address of the /metrics endpoint"),
    metrics_port: int = typer.Option(0, help="Port of the /metrics endpoint (0: any)"),
    sidecar_kubeconfig: Path = typer.Option(
        None, help="kubeconfig for autoscaler sidecars (the dev cluster has no service accounts "
        "mounted into pods)"),
    autoscaler_image: str = typer.Option(
        None, help="Image of the autoscaler sidecar (default: the head's Ray image, which then "
        "needs rayscale installed)"),
    workers: int = typer.Option(
        8, min=1, help="Reconciles run at once (each of a different RayCluster)"),
    feature_gates: str = typer.Option(
        "", help="KubeRay's feature gates, as KubeRay's operator takes them "
        "(RayCronJob=true: reconcile RayCronJobs; off by default, as in KubeRay). "
        "Gates rayscale does not have are ignored with a warning"),
    history: Path = typer.Option(
        None, help="Keep the clusters' history (rayscale ui) in this file (default "
        "$RAYSCALE_HOME/history.sqlite3); retention: $RAYSCALE_HISTORY_RETENTION or 7d"),
    no_history: bool = typer.Option(False, "--no-history", help="Keep no history"),
) -> None:
    """Run the operator until interrupted."""
    import kopf
    from lightkube import Client, KubeConfig

    from rayscale.operator import handlers
    from rayscale.operator.desired import PodSettings
    from rayscale.operator.metrics import OperatorMetrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # one INFO line per API request (several a second) would bury what matters
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        gates = parse_feature_gates(feature_gates)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--feature-gates") from None
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)
        client = Client(KubeConfig.from_file(kubeconfig), field_manager="rayscale-operator")
    else:
        client = Client(field_manager="rayscale-operator")
    keeper = None if no_history else _history(history)
    metrics = OperatorMetrics()
    port = metrics.serve(metrics_host, metrics_port)
    logging.info("operator metrics on http://%s:%s/metrics", metrics_host, port)
    sidecar_env = {k: v for k, v in os.environ.items()
                   if k in ("RAYSCALE_BACKOFF_S", "RAYSCALE_LAUNCH_TIMEOUT_S")}
    if sidecar_kubeconfig is not None:
        sidecar_env["KUBECONFIG"] = str(sidecar_kubeconfig.resolve())
    # dev cluster pods are processes of this machine: run this very installation (with
    # its import path, when this one runs from a source tree through PYTHONPATH)
    command = [sys.executable, "-m", "rayscale.cli.main"] if shared_pod_network else ["rayscale"]
    if shared_pod_network and os.environ.get("PYTHONPATH"):
        sidecar_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    handlers.CONTEXT = handlers.OperatorContext(
        client=client,
        settings=PodSettings(shared_network=shared_pod_network),
        metrics=metrics,
        sidecar=handlers.SidecarSettings(command, autoscaler_image, sidecar_env),
        namespaces=list(namespace or []),
        workers=workers,
        feature_gates=gates,
        history=keeper,
    )
    handlers.warm_up_decoders()
    kopf.run(
        standalone=True,
        clusterwide=not namespace,
        namespaces=namespace or [],
    )


def _history(path: Path | None) -> OperatorHistory | None:
    """The history keeper, or None (and a warning) if its file cannot be used: the
    history never keeps the operator from reconciling."""
    import sqlite3

    from rayscale.history.store import HistoryError, HistoryStore, retention_from_env
    from rayscale.operator.history import OperatorHistory

    try:
        retention_s = retention_from_env()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="RAYSCALE_HISTORY_RETENTION") from None
    try:
        # like a round, a write waits at most a second for another writer (a prune, a
        # `rayscale ui` reading), then is dropped: the history never holds up the operator
        keeper = OperatorHistory(HistoryStore(path, busy_timeout_s=1.0))
    except (HistoryError, sqlite3.Error, OSError) as exc:
        logging.warning("no history (rayscale ui) this run: %s", exc)
        return None
    keeper.start_pruning(retention_s)
    logging.info("clusters' history in %s (retention %.0f s)", keeper.store.path, retention_s)
    return keeper


#: KubeRay's feature gates rayscale implements, with their defaults (KubeRay v1.7's).
KNOWN_FEATURE_GATES = {"RayCronJob": False}


def parse_feature_gates(text: str) -> frozenset[str]:
    """``A=true,B=false`` (KubeRay's ``--feature-gates``) -> the gates that are on."""
    on = {name for name, default in KNOWN_FEATURE_GATES.items() if default}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or value.strip().lower() not in ("true", "false"):
            raise ValueError(f"{item!r}: expected <gate>=true or <gate>=false")
        name = name.strip()
        if name not in KNOWN_FEATURE_GATES:
            logging.warning("feature gate %s is not one of rayscale's (%s): ignored", name,
                            ", ".join(KNOWN_FEATURE_GATES))
            continue
        if value.strip().lower() == "true":
            on.add(name)
        else:
            on.discard(name)
    return frozenset(on)
