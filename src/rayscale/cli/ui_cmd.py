"""`rayscale ui`: the history of this user's clusters as web pages, on loopback."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import typer
from rich.console import Console

from rayscale.history.schema import HistoryError, default_path
from rayscale.history.store import HistoryStore, parse_retention, retention_from_env

err = Console(stderr=True, soft_wrap=True)
DEFAULT_PORT = 8270
PRUNE_EVERY_S = 3600.0


def _prune(history: Path, retention_s: float) -> int:
    if not history.exists():
        return 0
    store = HistoryStore(history)
    try:
        return store.prune(retention_s)
    finally:
        store.close()


def _pruner(history: Path, retention_s: float, stop: threading.Event) -> None:
    while not stop.wait(PRUNE_EVERY_S):
        try:
            _prune(history, retention_s)
        except Exception as exc:  # the pages go on; the next hour tries again
            err.print(f"pruning the history failed: {exc}", markup=False, highlight=False)


def ui_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback only unless "
                             "--allow-remote)"),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on (0: a free one)"),
    retention: str | None = typer.Option(
        None, help="Forget clusters gone, and rounds and events older, than this "
        "(7d, 36h, 90m; default $RAYSCALE_HISTORY_RETENTION or 7d)"),
    history: Path | None = typer.Option(None, help="The history file (default "
                                        "$RAYSCALE_HOME/history.sqlite3)"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback "
                                      "--host: the pages have no login"),
) -> None:
    """Serve the clusters' history (live and finished): a timeline of nodes per group
    against demand with the scaling events and their reasons, jobs and their logs."""
    import uvicorn

    from rayscale.ui.app import LOOPBACK_NAMES, HostError, check_host, make_app, open_history

    try:
        check_host(host, allow_remote)
        retention_s = parse_retention(retention, "--retention") if retention else \
            retention_from_env()
    except (HostError, ValueError) as exc:
        err.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    path = history or default_path()
    # this user's own history is pruned; a --history file (an archived copy, say) only
    # with an explicit --retention
    prune = history is None or retention is not None
    try:
        open_history(path)
        removed = _prune(path, retention_s) if prune else 0
    except HistoryError as exc:
        err.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if removed:
        err.print(f"forgot {removed} cluster(s) gone longer than the retention",
                  style="dim", markup=False, highlight=False)
    try:
        # bound here and handed to the server: the port printed is the one held (port 0
        # included), with no window for another process to take it
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                        else socket.AF_INET)
    except OSError as exc:
        err.print(f"cannot listen on {host}:{port}: {exc}", style="red", markup=False,
                  highlight=False)
        raise typer.Exit(1) from None
    port = listener.getsockname()[1]
    stop = threading.Event()
    if prune:
        threading.Thread(target=_pruner, args=(path, retention_s, stop), daemon=True,
                         name="history-prune").start()
    url_host = f"[{host}]" if ":" in host else host
    err.print(f"rayscale ui: http://{url_host}:{port}/ (history {path}); Ctrl-C stops it",
              markup=False, highlight=False)
    try:
        hosts = None if allow_remote else (*LOOPBACK_NAMES, host)
        config = uvicorn.Config(make_app(path, hosts=hosts), log_level="warning",
                                access_log=False, server_header=False)
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        stop.set()
        listener.close()
