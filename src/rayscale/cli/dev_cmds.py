"""`rayscale dev-cluster up|down|status|kubeconfig|bin-dir` and `rayscale vnode`.

The dev cluster is a real Kubernetes control plane on loopback
(:mod:`rayscale.devcluster`); the vnode is the kubelet stand-in that gives it
Nodes and runs their pods as local processes (:mod:`rayscale.vnode`).
``up --with-operator`` adds a vnode, the CRDs and the operator
(:mod:`rayscale.devcluster.stack`); ``up --with-kueue`` that and Kueue's
manager, built from source (:mod:`rayscale.devcluster.kueue`); ``down`` stops
whatever of it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # imported when a command runs: `rayscale plan` stays light
    from rayscale.devcluster import DevCluster
    from rayscale.devcluster.stack import DevStack

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


def _stack(name: str, state_dir: Path | None) -> DevStack:
    from rayscale.devcluster.stack import DevStack, pod_cidr_for

    return DevStack(_cluster(name, state_dir), pod_cidr=pod_cidr_for(name))


@dev_cluster_app.command("up")
def up_command(
    name: str = _NAME,
    state_dir: Path | None = _DIR,
    timeout: float = typer.Option(180.0, help="Seconds to wait for readiness."),
    with_operator: bool = typer.Option(
        False, "--with-operator",
        help="Also run a virtual node (regular + tainted elastic pool), install the CRDs "
             "and run rayscale's operator: a cluster ready for `helm install` / kubectl."),
    with_kueue: bool = typer.Option(
        False, "--with-kueue",
        help="As --with-operator, plus Kueue (built from source by scripts/build-kueue.sh "
             "if missing) with its RayJob and RayCluster integrations, webhooks on "
             "127.0.0.1."),
) -> None:
    """Start (or keep) the control plane; builds the binaries first if needed."""
    if with_operator or with_kueue:
        stack = _stack(name, state_dir)
        try:
            if with_kueue:
                from rayscale.devcluster import kueue_build

                kueue_build.ensure_built()
            took = stack.up(timeout_s=timeout, log=lambda line: typer.echo(line, err=True),
                            with_kueue=with_kueue)
        except (RuntimeError, TimeoutError) as exc:
            typer.echo(f"dev-cluster up failed: {exc}", err=True)
            raise typer.Exit(1) from None
        cluster = stack.cluster
        parts = "vnode, operator and Kueue" if with_kueue else "vnode and operator"
        typer.echo(f"dev cluster with {parts} ready in {took:.1f}s: {cluster.server}")
    else:
        cluster = _cluster(name, state_dir)
        took = cluster.start(timeout_s=timeout)
        typer.echo(f"dev cluster ready in {took:.1f}s: {cluster.server}")
    from rayscale.devcluster import binaries

    typer.echo(f"export KUBECONFIG={cluster.kubeconfig}")
    typer.echo(f'export PATH="{binaries.bin_dir()}:$PATH"   # kubectl')


@dev_cluster_app.command("down")
def down_command(
    name: str = _NAME,
    state_dir: Path | None = _DIR,
    purge: bool = typer.Option(False, help="Also delete the state (etcd data, certificates)."),
) -> None:
    """Stop Kueue, the operator and the vnode (if `up --with-operator`/`--with-kueue`
    started them), then the control plane's processes: by recorded PID and process
    group, never by name."""
    import shutil

    stack = _stack(name, state_dir)
    swept = stack.down()
    if swept:
        typer.echo(f"pod processes that outlived the vnode, stopped: {swept}", err=True)
    if purge:
        shutil.rmtree(stack.cluster.state_dir, ignore_errors=True)
    typer.echo("dev cluster stopped" + (" and purged" if purge else ""))


@dev_cluster_app.command("status")
def status_command(name: str = _NAME, state_dir: Path | None = _DIR) -> None:
    """Which components run, and whether the API server is ready; with a stack from
    `up --with-operator`, the vnode, its Nodes, the CRDs and the operator too."""
    stack = _stack(name, state_dir)
    for comp, alive in stack.cluster.running().items():
        typer.echo(f"{comp:26} {'running' if alive else 'stopped'}")
    typer.echo(f"{'ready':26} {stack.cluster.ready()}")
    for part, word in stack.status().items():
        typer.echo(f"{part:26} {word}")


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
