"""`rayscale up | down | status | submit` for local clusters."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from rayscale import ports, procs, rayauth
from rayscale.autoscaler.events import read_events
from rayscale.autoscaler.status import limit_words
from rayscale.cli.serve_cmds import up_service_command
from rayscale.local.cluster import ClusterError, down, is_running, resume, up
from rayscale.local.jobs import follow_logs
from rayscale.local.serve import serve_view
from rayscale.local.store import ClusterDir, ClusterRecord
from rayscale.spec import SpecError, is_service, parse_service, read_document

err = Console(stderr=True)


def _error(message: str) -> None:
    """A message for the user, in red, printed as is (no markup in paths or names)."""
    err.print(message, style="red", markup=False, highlight=False)


def _fail(exc: ClusterError) -> NoReturn:
    _error(str(exc))
    raise typer.Exit(1) from None


@contextlib.contextmanager
def _cluster_errors() -> Iterator[None]:
    """A ClusterError is the user's to read: its message and exit 1, no traceback."""
    try:
        yield
    except ClusterError as exc:
        _fail(exc)


def up_command(
    cluster_file: Path = typer.Argument(
        ..., help="RayCluster YAML (KubeRay ray.io/v1), or a RayService: its cluster, then "
        "its serveConfigV2"),
    timeout: float = typer.Option(180.0, help="Seconds to wait for the cluster to be ready"),
    no_auth: bool = typer.Option(
        False, "--no-auth",
        help="Start Ray WITHOUT token authentication (as `authOptions: {mode: disabled}`)",
    ),
    ha: bool = typer.Option(
        False, "--ha",
        help="GCS fault tolerance with Ray's embedded store (as `gcsFaultToleranceOptions: "
        "{backend: rocksdb}`): a head that dies is started again, workers rejoin it "
        "(for an external Redis, set gcsFaultToleranceOptions.redisAddress in the file)",
    ),
) -> None:
    """Start a local cluster; print the environment a driver needs (KEY=VALUE lines).

    Every node uses Ray's token authentication with a token made for this
    cluster; the printed lines point drivers at it (the file, not the value).
    A RayService file starts its rayClusterConfig under the RayService's name,
    applies its serveConfigV2 and waits until the applications run (also
    printing SERVE_HTTP_ADDRESS); on a cluster already running with the same
    rayClusterConfig it applies serveConfigV2 in place.
    """
    try:
        document = read_document(cluster_file)
        service = parse_service(document) if is_service(document) else None
    except SpecError as exc:
        _error(f"invalid cluster file {cluster_file}:")
        for line in exc.errors:
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if service is not None:
        up_service_command(service, cluster_file, timeout, no_auth, ha)
        return
    try:
        spec, record = up(cluster_file, wait_s=timeout, progress=lambda m: err.print(f"[dim]{m}"),
                          no_auth=no_auth, ha=ha)
    except SpecError as exc:
        _error(f"invalid cluster file {cluster_file}:")
        for line in exc.errors:
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except ClusterError as exc:
        _fail(exc)
    err.print(f"[green]cluster {spec.name} is up[/green]: dashboard {record.dashboard_url}")
    if record.token_file is None:
        err.print(f"[yellow]warning: {rayauth.DISABLED_WARNING}", markup=True, highlight=False)
    else:
        err.print(f"[dim]the dashboard asks for the token: `rayscale token {spec.name}`")
    for key, value in driver_env(record).items():
        typer.echo(f"{key}={shlex.quote(value)}")  # so `eval "$(rayscale up ...)"` is safe


def driver_env(record: ClusterRecord) -> dict[str, str]:
    """What a driver exports to use the cluster (auth: the token file's path, never the value)."""
    return {
        "RAY_ADDRESS": record.address,
        "RAYSCALE_NODE_IP": record.head_ip,
        "RAY_API_SERVER_ADDRESS": record.dashboard_url,
        **rayauth.auth_env(record.token_file),
    }


def token_command(name: str = typer.Argument(..., help="Cluster name")) -> None:
    """Print the cluster's Ray auth token (for the dashboard's sign-in, or another client)."""
    cluster = ClusterDir(name)
    if not cluster.exists():
        _error(f"no cluster named {name!r}")
        raise typer.Exit(1)
    record = cluster.load()
    if record.token_file is None:
        err.print(f"cluster {name!r} runs without token authentication", markup=False)
        raise typer.Exit(1)
    typer.echo(rayauth.read_token(Path(record.token_file)))


def down_command(name: str = typer.Argument(..., help="Cluster name (metadata.name)")) -> None:
    """Stop everything `up` started for this cluster, by PID."""
    with _cluster_errors():
        stopped = down(name, report=lambda m: err.print(
            m, style="yellow" if m.startswith("warning") else None, markup=False,
            highlight=False))
    err.print(f"cluster {name} is down ({len(stopped)} process(es) stopped)")


def resume_command(name: str = typer.Argument(..., help="Cluster name")) -> None:
    """Restart a dead autoscaler; it adopts the running nodes (no duplicates)."""
    with _cluster_errors():
        record = resume(name)
    err.print(f"autoscaler of {name} running again (pid {record.autoscaler_pid})")


# The autoscaler reports every round (about a second); older than this is stale.
STALE_AFTER_S = 10.0
LAST_KNOWN_KEYS = ("groups", "nodes", "usage", "demand", "plan")


def _load_status(name: str) -> tuple[ClusterDir, dict[str, Any]]:
    """The autoscaler's last report, checked against what is true now.

    ``state`` is ``running`` only when the head's GCS accepts connections and
    the autoscaler is alive with a fresh report. With the head down, the report
    describes the past: it moves under ``last_known`` and nothing is shown as
    running. ``problems`` says in plain words what is wrong.
    """
    cluster = ClusterDir(name)
    if not cluster.exists():
        _error(f"no cluster named {name!r}")
        raise typer.Exit(1)
    report = cluster.read_status() or {}
    record = cluster.load()
    head = is_running(cluster)
    gcs = head and ports.accepts(record.head_ip, record.gcs_port)
    autoscaler = record.autoscaler_pid is not None and procs.is_alive(record.autoscaler_pid)
    age = time.time() - report["updated_at"] if "updated_at" in report else None
    problems = []
    if not head:
        problems.append("the Ray head is not running")
    elif not gcs:
        problems.append(f"the Ray head's GCS ({record.address}) does not answer")
    if not autoscaler:
        problems.append(f"the autoscaler is not running (`rayscale resume {name}` restarts it)"
                        if head else "the autoscaler is not running")
    if age is None:
        problems.append("the autoscaler has not reported yet")
    elif age > STALE_AFTER_S:
        problems.append(f"the autoscaler's last report is {age:.0f} s old")
    status: dict[str, Any] = {"groups": {}, "nodes": []}
    if gcs:
        status.update(report)
    elif report:
        status["last_known"] = {k: report[k] for k in LAST_KNOWN_KEYS if k in report}
        status["last_known"]["updated_at"] = report.get("updated_at")
    status["state"] = "down" if not head else "running" if not problems else "degraded"
    status["problems"] = problems
    status["events"] = read_events(cluster.events_file, 30)
    status["name"] = name
    status["address"] = record.address
    status["dashboard"] = record.dashboard_url
    status["head_running"] = head
    status["gcs_reachable"] = gcs
    status["autoscaler_running"] = autoscaler
    status["report_age_s"] = age
    status["head"] = {"pid": record.head_pid, "fault_tolerance": record.gcs_storage,
                      "storage": _storage(record), "restarts": record.head_restarts,
                      "restarted_at": record.head_restarted_at}
    if record.ha and not head and autoscaler:
        problems.append("the head is being restarted (GCS fault tolerance)")
    if gcs:
        serve = serve_view(cluster)  # read from Serve now; None: never deployed with rayscale
        if serve is not None:
            status["serve"] = serve
    return cluster, status


def _storage(record: ClusterRecord) -> str | None:
    """Where the GCS keeps its tables, in words (never a credential)."""
    if record.gcs_storage == "redis":
        return f"redis at {record.redis_address} (namespace {record.redis_namespace})"
    if record.gcs_storage == "rocksdb":
        return "rocksdb store"
    return None


def status_command(
    name: str = typer.Argument(..., help="Cluster name"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="A RayCluster on Kubernetes in this namespace"),
    kubeconfig: Path | None = typer.Option(
        None, help="With -n: the kubeconfig (default: $KUBECONFIG, ~/.kube/config)"),
) -> None:
    """Nodes per group (active, idle, pending), resource usage, demand, recent events.

    Exits 0 when the cluster is running and reporting, 3 when it is degraded or
    down (the output says why). With -n, a RayCluster on Kubernetes: the same view
    from the RayCluster, its pods and its autoscaler sidecar's report.
    """
    if namespace is not None:
        status = _kube_status(name, namespace, kubeconfig)
    else:
        _, status = _load_status(name)
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
    else:
        _render(status)
    if status["state"] != "running":
        raise typer.Exit(3)


def _kube_status(name: str, namespace: str, kubeconfig: Path | None) -> dict[str, Any]:
    import httpx2 as httpx
    from lightkube import ApiError, Client, KubeConfig
    from lightkube.core.exceptions import ConfigError
    from lightkube.resources.core_v1 import Pod

    from rayscale.autoscaler.kube_status import read_status
    from rayscale.autoscaler.kube_view import kube_status
    from rayscale.labels import CLUSTER_LABEL
    from rayscale.providers.kuberay import RayClusterResource

    try:
        client = Client(KubeConfig.from_file(kubeconfig)) if kubeconfig else Client()
    except (ConfigError, OSError) as exc:
        _error(f"no Kubernetes configuration: {exc}")
        raise typer.Exit(1) from None
    try:
        try:
            cluster = client.get(RayClusterResource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                _error(f"no RayCluster {name!r} in namespace {namespace!r}")
                raise typer.Exit(1) from None
            raise
        pods = [p.to_dict() for p in client.list(
            Pod, namespace=namespace, labels={CLUSTER_LABEL: name})]
        try:
            report = read_status(client, name, namespace)
        except ApiError as exc:
            if exc.status.code != 403:
                raise
            report = None  # not allowed to read it: the view from the CR and pods
    except ApiError as exc:
        _error(f"the API server refused: {exc}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        _error(f"the API server cannot be reached: {exc}")
        raise typer.Exit(1) from None
    return kube_status(cluster.to_dict(), pods, report)  # type: ignore[no-untyped-call]


def _render(status: dict[str, Any]) -> None:
    out = Console(highlight=False)
    out.print(f"[bold]rayscale status[/bold] {status['name']}  address {status['address']}  "
              f"dashboard {status['dashboard']}", markup=True)
    if status["state"] != "running":
        out.print(f"{status['state'].upper()}: " + "; ".join(status["problems"]),
                  style="bold red", markup=False)
    head = status["head"]
    kube = status.get("kubernetes")
    if kube is not None:
        conditions = ", ".join(f"{k}={v}" for k, v in kube["conditions"].items()) or "-"
        kr = kube["status"]
        out.print(f"RayCluster state {kr.get('state') or '-'}  workers ready "
                  f"{kr.get('readyWorkerReplicas', 0)}/{kr.get('desiredWorkerReplicas', 0)}  "
                  f"head pod {head.get('pod') or '-'}  conditions {conditions}"
                  + (f"  queue {kube['queue']}" if kube.get("queue") else ""), markup=False)
    elif head["fault_tolerance"]:
        when = (time.strftime(", last at %H:%M:%S", time.localtime(head["restarted_at"]))
                if head["restarted_at"] else "")
        out.print(f"head pid {head['pid']}  fault tolerance: {head['storage']}  "
                  f"restarts: {head['restarts']}{when}", markup=False)
    if status["state"] == "down" or not status["gcs_reachable"]:
        last = status.get("last_known") or {}
        if last.get("updated_at"):
            stamp = time.strftime("%H:%M:%S", time.localtime(last["updated_at"]))
            counts = {g: v["running"] for g, v in last.get("groups", {}).items()}
            out.print(f"last report at {stamp}: workers running then {counts} (not now)",
                      markup=False)
        _render_events(out, status)
        return
    age = status.get("report_age_s")
    state = "running" if status["autoscaler_running"] else "[red]not running[/red]"
    when = f"{age:.1f}s ago" if age is not None else "never"
    if status.get("autoscaling", True):
        out.print(f"autoscaler {state} (updated {when})  metrics {status.get('metrics', '-')}")
    else:
        out.print("autoscaler off (enableInTreeAutoscaling is not set): replicas as written")
    table = Table("group", "running", "idle", "pending", "terminating", "min", "max", "launchable",
                  title="Node status")
    for name, g in status["groups"].items():
        table.add_row(name, str(g["running"]), str(g["idle"]), str(g["pending"]),
                      str(g["terminating"]), str(g["min"]), str(g["max"]),
                      "yes" if g["launchable"] else "[red]backing off[/red]")
    out.print(table)
    nodes = Table("node", "group", "status", "pid", "ip", "idle s", title="Nodes")
    for n in status["nodes"]:
        nodes.add_row(n["id"][:16], n["group"], n["status"], str(n.get("pid") or "-"),
                      str(n.get("ip") or "-"), f"{n.get('idle_s', 0):.0f}")
    out.print(nodes)
    out.print("[bold]Resources[/bold]")
    for res, u in status.get("usage", {}).items():
        out.print(f"  {_amount(res, u['used'])}/{_amount(res, u['total'])} {res}")
    out.print("[bold]Demands[/bold]")
    out.print("\n".join(_demand_lines(status)) or "  (no resource demands)", markup=False)
    if status.get("serve") is not None:
        _render_serve(out, status["serve"])
    _render_events(out, status)


def _render_serve(out: Console, serve: dict[str, Any]) -> None:
    """Serve's applications, as Serve reports them now (`rayscale serve deploy`)."""
    out.print(f"[bold]Serve[/bold]  http {serve['http'] or '-'}  proxies "
              f"{serve['proxy_location']}"
              + (f"  proxy {serve['proxy']}" if serve["proxy"] else ""))
    for problem in serve["problems"]:
        out.print(f"  {problem}", style="red", markup=False)
    table = Table("application", "status", "route", "routed", "deployments", "message",
                  title="Serve applications")
    for name, app in serve["applications"].items():
        deployments = ", ".join(
            f"{d}: {v['status']} "
            + " ".join(f"{n} {state.lower()}" for state, n in sorted(v["replicas"].items()))
            for d, v in app["deployments"].items()) or "-"
        routed = {True: "yes", False: "no", None: "-"}[app["routed"]]
        table.add_row(name, app["status"], app["route_prefix"] or "-", routed, deployments,
                      app["reason"] or "-")
    out.print(table)


def _demand_lines(status: dict[str, Any]) -> list[str]:
    """Pending demand, then what no group could ever hold (as `ray status` splits them)."""
    demand = status.get("demand", {})
    infeasible = (status.get("plan") or {}).get("infeasible") or {}
    lost = {_demand_key(e) for kind in ("tasks", "gangs") for e in infeasible.get(kind, [])}
    pending: list[str] = []
    never: list[str] = []
    for s in demand.get("tasks", []):
        line = f"  {s['resources']}{_selectors(s)}: {s['count']}+ pending tasks/actors"
        (never if _demand_key(s) in lost else pending).append(line)
    for g in demand.get("gangs", []):
        line = (f"  {g['bundles']} ({g['strategy']}){_selectors(g)}: "
                f"{g['count']}+ pending placement groups")
        (never if _demand_key(g) in lost else pending).append(line)
    pending += [f"  {s['resources']}{_selectors(s)}: {s['count']} requested (request_resources)"
                for s in demand.get("floor", [])]
    if never:
        pending += ["  infeasible (no worker group can hold these):", *("  " + x for x in never)]
    plan = status.get("plan") or {}
    limited = plan.get("limited") or {}
    if limited:
        capped = plan.get("capped") or {}
        count = sum(int(e.get("count", 1)) for kind in ("tasks", "gangs", "floor")
                    for e in capped.get(kind, []))
        holds = "; ".join(f"{g}: {limit_words(limit)}" for g, limit in sorted(limited.items()))
        pending.append(f"  capped, not launched now ({count}): {holds}")
    return pending


def _demand_key(entry: dict[str, Any]) -> str:
    """One demand entry without its count: its shape and label selectors."""
    return json.dumps({k: v for k, v in entry.items() if k != "count"}, sort_keys=True)


def _selectors(entry: dict[str, Any]) -> str:
    parts = [f" {k}={entry[k]}" for k in ("label_selector", "fallback_strategy",
                                          "bundle_label_selector") if entry.get(k)]
    return "".join(parts)


def _render_events(out: Console, status: dict[str, Any]) -> None:
    out.print("[bold]Recent scaling events[/bold]")
    for e in status["events"][-12:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e.get("ts", 0)))
        out.print(f"  {stamp} {e['kind']:<15} {e['message']}", markup=False)


def _amount(resource: str, value: float) -> str:
    if resource in ("memory", "object_store_memory"):
        return f"{value / 2**30:.2f}GiB"
    return f"{value:g}"


def submit_command(
    name: str = typer.Argument(..., help="Cluster name"),
    entrypoint: list[str] = typer.Argument(..., help="Command to run, after --"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return once submitted"),
) -> None:
    """Run a command (e.g. `-- python script.py`) as a Ray job on the cluster."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cluster = ClusterDir(name)
    if not is_running(cluster):
        _error(f"cluster {name!r} is not running")
        raise typer.Exit(1)
    if entrypoint and entrypoint[0] == "--":
        entrypoint = entrypoint[1:]
    if not entrypoint:
        _error("nothing to run: give the command after --")
        raise typer.Exit(2)
    record = cluster.load()
    # Ray runs a job's entrypoint through a shell: every piece is quoted, so user
    # input is never interpreted by it; the job runs in the caller's directory.
    command = shlex.join(["cd", os.getcwd()]) + " && " + shlex.join(entrypoint)
    try:
        client = JobSubmissionClient(record.dashboard_url,
                                     headers=rayauth.bearer_headers(record.token_file))
        job_id = client.submit_job(entrypoint=command)
        err.print(f"submitted job {job_id}")
        if no_wait:
            typer.echo(job_id)
            return
        for chunk in follow_logs(client, job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        final = client.get_job_status(job_id)
    except (OSError, RuntimeError) as exc:  # requests' errors are OSErrors; Ray's HTTP ones not
        _error(f"the Ray head's job API ({record.dashboard_url}) failed: {exc}\n"
               f"`rayscale status {name}` says what runs")
        raise typer.Exit(1) from None
    err.print(f"job {job_id} {final.value}")
    raise typer.Exit(0 if final == JobStatus.SUCCEEDED else 1)
