"""`rayscale job submit | list | logs | stop`: KubeRay RayJob files, run locally.

The lifecycle is :mod:`rayscale.local.jobs`; this is the words and exit codes:
``job submit`` exits 0 when the Ray job SUCCEEDED, 1 when it FAILED (also a
cluster that did not come up, a refused submission, ``activeDeadlineSeconds``
exceeded), 2 for an invalid file (the field named, nothing started), 3 when it
was STOPPED (``rayscale job stop`` or Ctrl-C) and 4 when ``suspend: true``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from rayscale.local import jobs
from rayscale.spec import SpecError, load_job_spec

err = Console(stderr=True, soft_wrap=True)  # commands in messages stay on one line
job_app = typer.Typer(help="Run KubeRay RayJob files on this machine.", no_args_is_help=True)


def _error(message: str) -> None:
    err.print(message, style="red", markup=False, highlight=False)


def _progress(message: str) -> None:
    err.print(message, style="dim", markup=False, highlight=False)


def _sigterm_is_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@job_app.command("submit")
def submit_command(
    job_file: Path = typer.Argument(..., help="RayJob YAML (KubeRay ray.io/v1)"),
    timeout: float = typer.Option(180.0, help="Seconds to wait for the job's cluster to start"),
) -> None:
    """Run a RayJob: its cluster (or the one clusterSelector names), its entrypoint as a
    Ray job with the logs on stdout, then the cluster's shutdown per the file.

    Exit status: 0 SUCCEEDED, 1 FAILED, 2 invalid file, 3 STOPPED (`rayscale job
    stop` or Ctrl-C, which stops the job), 4 suspended (not run).
    """
    try:
        job = load_job_spec(job_file)
    except SpecError as exc:
        _error(f"invalid RayJob file {job_file}:")
        for line in exc.errors:
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(jobs.EXIT_INVALID) from None

    def show(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    signal.signal(signal.SIGTERM, _sigterm_is_ctrl_c)
    try:
        code = jobs.run_job(job, job_file, on_logs=show, progress=_progress,
                            up_timeout_s=timeout)
    except jobs.JobError as exc:
        _error(str(exc))
        raise typer.Exit(jobs.EXIT_FAILED) from None
    raise typer.Exit(code)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


@job_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Jobs known on this machine: cluster, Ray job status, start and end."""
    records = jobs.all_jobs()
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in records], indent=2))
        return
    rows = [("NAME", "CLUSTER", "STATUS", "DEPLOYMENT", "START", "END")]
    for record in records:
        deployment: str = record.deployment_status
        if not record.finished and not record.runner_alive():
            deployment += " (submit command gone)"
        cluster = record.cluster + (" (shut down)" if record.cluster_shut_down else "")
        rows.append((record.name, cluster, record.job_status or "-", deployment,
                     _when(record.start_time), _when(record.end_time)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


@job_app.command("logs")
def logs_command(
    name: str = typer.Argument(..., help="Job name (metadata.name)"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Until the job ends"),
) -> None:
    """The job's logs (from its cluster while it runs, else the copy kept locally)."""
    try:
        for chunk in jobs.job_logs(name, follow=follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except jobs.JobError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # following only: the job goes on
        raise typer.Exit(130) from None


@job_app.command("stop")
def stop_command(name: str = typer.Argument(..., help="Job name (metadata.name)")) -> None:
    """Stop a running job (its `job submit` then exits 3 and applies the shutdown)."""
    try:
        record = jobs.stop_job(name)
    except jobs.JobError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    err.print(f"job {name} stopped ({record.job_status or 'STOPPED'})", markup=False)
