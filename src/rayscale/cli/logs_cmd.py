"""`rayscale logs NAME [--node ID] [--group G] [--job J] [--since 5m] [--tail N] [-f] [--ray]`.

Local clusters read the files under ``$RAYSCALE_HOME/clusters/NAME/logs/``
(:mod:`rayscale.local.logs`); with ``-n NAMESPACE`` the RayCluster's pods'
logs through the API server (:mod:`rayscale.observe.kube_logs`). docs/logs.md
says what each source holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from rayscale.local import logs
from rayscale.logtail import parse_duration

err = Console(stderr=True, soft_wrap=True)


def _error(message: str) -> None:
    err.print(message, style="red", markup=False, highlight=False)


def _check_since(value: str | None) -> str | None:
    """Click names the option in the message: "Invalid value for '--since': ..."."""
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _sigterm_is_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def logs_command(
    name: str = typer.Argument(..., help="Cluster name (a RayCluster's name with -n)"),
    node: list[str] = typer.Option(
        [], "--node", help="A worker node's id (as `rayscale status` shows it; a pod name "
        "with -n), or head, or autoscaler; repeatable"),
    group: list[str] = typer.Option(
        [], "--group", help="Every node of this worker group, stopped ones too (lines "
        "prefixed with the node); repeatable"),
    job: list[str] = typer.Option(
        [], "--job", help="A Ray job's output: its submission id or RayJob name (local "
        "clusters); repeatable"),
    since: str | None = typer.Option(
        None, "--since", callback=_check_since,
        help="Only lines written in this last while: 30s, 5m, 2h, 1h30m"),
    tail: int | None = typer.Option(
        None, "--tail", min=0, help="Only the last N lines of each source"),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new lines (and new nodes') until Ctrl-C"),
    ray: bool = typer.Option(
        False, "--ray", help="Also Ray's own log files of the selected head/nodes "
        "(raylet.out, worker-*.out, ...; local clusters, until `down`)"),
    list_only: bool = typer.Option(
        False, "--list", help="List the sources (name, kind, group, state) instead"),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="A RayCluster on Kubernetes in this namespace"),
    kubeconfig: Path | None = typer.Option(
        None, "--kubeconfig", help="With -n: kubeconfig (default: $KUBECONFIG, in-cluster)"),
) -> None:
    """Logs of a cluster: head, autoscaler, every worker node (stopped ones too), jobs.

    With no --node/--group/--job: all of them, each line prefixed with its source.
    """
    since_s = parse_duration(since) if since is not None else None
    since_at = time.time() - since_s if since_s is not None else None
    previous = signal.signal(signal.SIGTERM, _sigterm_is_ctrl_c)
    out = sys.stdout.buffer
    try:
        if namespace is not None:
            _kube(name, namespace, kubeconfig, tuple(node), tuple(group), job, ray, since_s,
                  tail, follow, list_only)
        else:
            _local(name, tuple(node), tuple(group), tuple(job), ray, since_at, tail, follow,
                   list_only)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:  # `rayscale logs NAME | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        raise typer.Exit(0) from None
    finally:
        signal.signal(signal.SIGTERM, previous)  # in-process callers (tests) get theirs back


def _local(name: str, nodes: tuple[str, ...], groups: tuple[str, ...], jobs: tuple[str, ...],
           ray: bool, since_at: float | None, tail: int | None, follow: bool,
           list_only: bool) -> None:
    selection = logs.Selection(nodes=nodes, groups=groups, jobs=jobs, ray=ray)
    try:
        cluster = logs.cluster_dir(name)
        if list_only:
            _list(logs.sources(cluster, selection))
            return
        logs.show(lambda strict: logs.sources(cluster, selection, strict), sys.stdout.buffer,
                  prefix=not selection.single, since=since_at, follow=follow, tail_lines=tail)
    except logs.LogsError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None


def _list(found: list[logs.Source]) -> None:
    rows = [("SOURCE", "KIND", "GROUP", "STATE", "FILE")]
    for s in found:
        rows.append((s.name, s.kind, s.group or "-", "running" if s.running else "stopped",
                     str(s.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _kube(name: str, namespace: str, kubeconfig: Path | None, nodes: tuple[str, ...],
          groups: tuple[str, ...], jobs: list[str], ray: bool, since_s: float | None,
          tail: int | None, follow: bool, list_only: bool) -> None:
    from lightkube import ApiError, Client, KubeConfig
    from lightkube.core.exceptions import ConfigError

    from rayscale.observe import kube_logs

    if jobs or ray:
        _error("--job and --ray read a local cluster's files; with -n, `kubectl logs` the "
               "RayJob's submitter pod")
        raise typer.Exit(2)
    try:
        client = Client(KubeConfig.from_file(kubeconfig)) if kubeconfig else Client()
    except (ConfigError, OSError) as exc:
        _error(f"no Kubernetes configuration: {exc}")
        raise typer.Exit(1) from None

    def listing(strict: bool) -> list[kube_logs.PodSource]:
        return kube_logs.select(kube_logs.cluster_pods(client, name, namespace), name,
                                namespace, nodes, groups, strict)

    try:
        if list_only:
            for s in listing(True):
                typer.echo(f"{s.name}  pod/{s.pod}  container={s.container}  "
                           f"group={s.group or '-'}")
            return
        single = len(nodes) == 1 and not groups
        kube_logs.show(client, listing, namespace, sys.stdout.buffer, prefix=not single,
                       since_s=since_s, follow=follow, tail_lines=tail)
    except kube_logs.KubeLogsError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except ApiError as exc:
        _error(f"the API server refused: {exc}")
        raise typer.Exit(1) from None
