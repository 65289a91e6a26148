"""`rayscale dev-cluster up|down|status|kubeconfig|bin-dir` and `rayscale vnode`.

The dev cluster is a real Kubernetes control plane on loopback
(:mod:`rayscale.devcluster`); the vnode is the kubelet stand-in that gives it
Nodes and runs their pods as local processes (:mod:`rayscale.vnode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # imported when a command runs: `rayscale plan` stays light
    from rayscale.devcluster import DevCluster

dev_cluster_app = typer.Typer(
    name="dev-cluster",
    help="A real Kubernetes control plane (etcd, kube-apiserver, scheduler, "
         "controller-manager) on 127.0.0.1.",
    no_args_is_help=True,
    add_completion=False,
)

_NAME = typer.Option("default", "--name", help="Cluster name (state under $RAYSCALE_HOME).")
_DIR = typer.Option(None, "--state-dir", help="State directory (overrides --name).")


def _cluster(name: str, state_dir: Path | None) -> DevCluster:
    from rayscale.devcluster import DevCluster, default_state_dir

    return DevCluster(state_dir or default_state_dir(name), name=f"rayscale-{name}")


@dev_cluster_app.command("up")
def up_command(
    name: str = _NAME,
    state_dir: Path | None = _DIR,
    timeout: float = typer.Option(180.0, help="Seconds to wait for readiness."),
) -> None:
    """Start (or keep) the control plane; builds the binaries first if needed."""
    cluster = _cluster(name, state_dir)
    took = cluster.start(timeout_s=timeout)
    typer.echo(f"dev cluster ready in {took:.1f}s: {cluster.server}")
    typer.echo(f"export KUBECONFIG={cluster.kubeconfig}")


@dev_cluster_app.command("down")
def down_command(
    name: str = _NAME,
    state_dir: Path | None = _DIR,
    purge: bool = typer.Option(False, help="Also delete the state (etcd data, certificates)."),
) -> None:
    """Stop the control plane's processes (by recorded PID, process group)."""
    import shutil

    cluster = _cluster(name, state_dir)
    cluster.stop()
    if purge:
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
    typer.echo("dev cluster stopped" + (" and purged" if purge else ""))


@dev_cluster_app.command("status")
def status_command(name: str = _NAME, state_dir: Path | None = _DIR) -> None:
    """Which components run, and whether the API server is ready."""
    cluster = _cluster(name, state_dir)
    for comp, alive in cluster.running().items():
        typer.echo(f"{comp:26} {'running' if alive else 'stopped'}")
    typer.echo(f"{'ready':26} {cluster.ready()}")


@dev_cluster_app.command("kubeconfig")
def kubeconfig_command(
    name: str = _NAME,
    state_dir: Path | None = _DIR,
    path_only: bool = typer.Option(False, "--path", help="Print the file's path only."),
) -> None:
    """Print the admin kubeconfig (or its path)."""
    cluster = _cluster(name, state_dir)
    if not cluster.kubeconfig.exists():
        typer.echo("no kubeconfig yet: run `rayscale dev-cluster up`", err=True)
        raise typer.Exit(1)
    typer.echo(str(cluster.kubeconfig) if path_only else cluster.kubeconfig.read_text())


@dev_cluster_app.command("bin-dir")
def bin_dir_command() -> None:
    """Print the directory of the built binaries, kubectl included.

    For `export PATH="$(rayscale dev-cluster bin-dir):$PATH"`. Warns (on stderr) when
    kubectl is not built there yet: `bash scripts/build-k8s.sh` builds it.
    """
    from rayscale.devcluster import binaries

    d = binaries.bin_dir()
    if not (d / "kubectl").exists():
        typer.echo(f"no kubectl in {d} yet: run `bash scripts/build-k8s.sh`", err=True)
    typer.echo(str(d))


def vnode_command(
    kubeconfig: Path | None = typer.Option(
        None, "--kubeconfig", help="Kubeconfig (default: the dev cluster named by --cluster)."),
    cluster: str = typer.Option("default", "--cluster", help="Dev cluster name."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML: name, pools (capacity, labels, taints), pod_cidr, ..."),
    name: str | None = typer.Option(None, "--name", help="Node name prefix (overrides config)."),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Pod dirs and logs (default $RAYSCALE_HOME/vnode/<name>)."),
    pod_cidr: str | None = typer.Option(
        None, "--pod-cidr", help="Loopback block for pod IPs (inside 127.0.0.0/8)."),
    fake_run: bool = typer.Option(
        False, "--fake-run",
        help="Benchmark mode: report pods Running without starting any process."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run a virtual node (kubelet stand-in): Nodes from the config, pods as local processes."""
    from rayscale.vnode.main import run_vnode

    kc = kubeconfig or _cluster(cluster, None).kubeconfig
    if not kc.exists():
        typer.echo(f"kubeconfig {kc} not found (start `rayscale dev-cluster up` first)", err=True)
        raise typer.Exit(1)
    run_vnode(kc, config, name, state_dir, pod_cidr, fake_run, verbose)
