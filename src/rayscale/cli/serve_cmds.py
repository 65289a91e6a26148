"""`rayscale serve deploy | delete`, and `rayscale up` of a RayService file.

Exit codes: 0 every application runs; 1 it failed (an application did not
come up, Serve refused the config, the cluster is not running); 2 the file
is invalid or cannot run in local mode (each problem named by field; nothing
changed).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from rayscale import rayauth
from rayscale.local.cluster import ClusterError
from rayscale.local.serve import DeployResult, ServeError, delete, deploy
from rayscale.local.service import kubernetes_only_fields, up_service
from rayscale.local.store import ClusterDir
from rayscale.spec import ServiceSpec, SpecError, load_serve_config

err = Console(stderr=True)
serve_app = typer.Typer(help="Ray Serve applications on a local cluster.",
                        no_args_is_help=True, add_completion=False)
#: The line `serve deploy` and `up` of a RayService print: where Serve answers.
HTTP_ADDRESS_KEY = "SERVE_HTTP_ADDRESS"


def _plain(message: str, style: str | None = None) -> None:
    err.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _invalid(source: Path, exc: SpecError) -> typer.Exit:
    _plain(f"invalid Serve config in {source} (nothing was changed):", style="red")
    for line in exc.errors:
        _plain(f"  {line}")
    return typer.Exit(2)


@serve_app.command("deploy")
def deploy_command(
    name: str = typer.Argument(..., help="Cluster name (a running local cluster)"),
    config_file: Path = typer.Argument(
        ..., help="Serve config (applications, http_options, proxy_location), as `serve "
        "deploy` takes it, or a RayService file (its serveConfigV2)"),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the applications"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return once Serve took the config"),
) -> None:
    """Apply a Serve config to a running cluster; print the HTTP address.

    Applying a changed config again updates the applications in place (a new
    user_config reconfigures the running replicas; new code starts new ones
    before the old ones stop). Applications left out of the config are deleted.
    """
    try:
        config = load_serve_config(config_file)
    except SpecError as exc:
        raise _invalid(config_file, exc) from None
    cluster = ClusterDir(name)
    if not cluster.exists():
        _plain(f"no cluster named {name!r}", style="red")
        raise typer.Exit(1)
    try:
        result = deploy(cluster, config, config_file.resolve().parent,
                        str(config_file.resolve()), wait_s=0 if no_wait else timeout,
                        progress=lambda m: _plain(m, style="dim"))
    except SpecError as exc:
        raise _invalid(config_file, exc) from None
    except ServeError as exc:
        _plain(str(exc), style="red")
        raise typer.Exit(1) from None
    _report(name, result)
    if result.http_url is not None:
        typer.echo(f"{HTTP_ADDRESS_KEY}={shlex.quote(result.http_url)}")
    if result.failed:
        raise typer.Exit(1)


@serve_app.command("delete")
def delete_command(name: str = typer.Argument(..., help="Cluster name")) -> None:
    """Shut Serve down on the cluster: every application, its controller and proxy."""
    try:
        delete(ClusterDir(name))
    except ServeError as exc:
        _plain(str(exc), style="red")
        raise typer.Exit(1) from None
    _plain(f"Serve is shut down on {name}")


def _report(name: str, result: DeployResult) -> None:
    for app in result.apps:
        where = (f" at {result.http_url}{app.route_prefix}"
                 if result.http_url is not None and app.route_prefix is not None else "")
        if app.status == "RUNNING":
            _plain(f"application {app.name} is RUNNING{where}", style="green")
        else:
            kept = (f"; its route {app.route_prefix} is still routed (the previous version "
                    f"keeps serving)" if app.routed else "")
            _plain(f"application {app.name} is {app.status}: {app.reason}{kept}", style="red")
    if result.failed:
        _plain(f"`rayscale status {name}` shows Serve's full message; fix the config and "
               f"`rayscale serve deploy {name} FILE` again")


def up_service_command(spec: ServiceSpec, source: Path, timeout: float, no_auth: bool,
                       ha: bool) -> None:
    """`rayscale up` of a RayService file: its cluster, then its Serve applications."""
    from rayscale.cli.local_cmds import driver_env

    for field_name in kubernetes_only_fields(spec):
        _plain(f"note: {field_name} is a Kubernetes matter, not acted on in local mode",
               style="yellow")
    try:
        record, result = up_service(spec, source, wait_s=timeout, progress=lambda m: _plain(
            m, style="dim"), no_auth=no_auth, ha=ha)
    except SpecError as exc:
        raise _invalid(source, exc) from None
    except (ClusterError, ServeError) as exc:
        _plain(str(exc), style="red")
        raise typer.Exit(1) from None
    if record.token_file is None:
        err.print(f"[yellow]warning: {rayauth.DISABLED_WARNING}", markup=True, highlight=False)
    _report(spec.name, result)
    for key, value in driver_env(record).items():
        typer.echo(f"{key}={shlex.quote(value)}")
    if result.http_url is not None:
        typer.echo(f"{HTTP_ADDRESS_KEY}={shlex.quote(result.http_url)}")
    if result.failed:
        raise typer.Exit(1)
