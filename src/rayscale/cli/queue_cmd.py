"""`rayscale queue [-n NS | -A]`: queued RayJobs and RayClusters, and why they wait."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, soft_wrap=True)


def queue_command(
    namespace: str | None = typer.Option(None, "--namespace", "-n",
                                         help="This namespace (default: the kubeconfig's)"),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A",
                                        help="Every namespace"),
    kubeconfig: Path | None = typer.Option(
        None, help="The kubeconfig (default: $KUBECONFIG, ~/.kube/config)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Queued RayJobs and RayClusters (labelled kueue.x-k8s.io/queue-name): their
    LocalQueue and ClusterQueue, and from Kueue's Workloads where each stands and why
    (pending and Kueue's reason, inadmissible, admitted with its flavors, preempted)."""
    import httpx2 as httpx
    from lightkube import ALL_NS, ApiError, Client, KubeConfig
    from lightkube.core.exceptions import ConfigError
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.operators import exists

    from rayscale.observe.kueue_view import QUEUE_LABEL, queued

    try:
        client = Client(KubeConfig.from_file(kubeconfig)) if kubeconfig else Client()
    except (ConfigError, OSError) as exc:
        err.print(f"no Kubernetes configuration: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    scope: Any = ALL_NS if all_namespaces else (namespace or client.namespace)
    workload_res = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload",
                                              "workloads")
    objects: list[tuple[str, dict[str, Any]]] = []
    kueue = True
    try:
        for kind, plural in (("RayJob", "rayjobs"), ("RayCluster", "rayclusters")):
            res = create_namespaced_resource("ray.io", "v1", kind, plural)
            objects += [(kind, o.to_dict()) for o in  # type: ignore[no-untyped-call]
                        client.list(res, namespace=scope, labels={QUEUE_LABEL: exists()})]
        try:
            workloads = [w.to_dict() for w in  # type: ignore[no-untyped-call]
                         client.list(workload_res, namespace=scope)]
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            workloads, kueue = [], False
    except ApiError as exc:
        err.print(f"the API server refused: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"the API server cannot be reached: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    views = queued(objects, workloads)
    if as_json:
        typer.echo(json.dumps({"kueue": kueue, "queued": [asdict(v) for v in views]}, indent=2))
        return
    if not kueue:
        err.print("Kueue is not installed here (no Workload API): nothing is queued",
                  style="yellow", markup=False)
    table = Table("namespace", "kind", "name", "queue", "cluster queue", "priority", "state",
                  "status", "why", title="Queued Ray work")
    for v in views:
        table.add_row(v.namespace, v.kind, v.name, v.queue, v.cluster_queue or "-",
                      v.priority or "-", v.state, v.running or "-", v.why)
    Console(highlight=False).print(table)
