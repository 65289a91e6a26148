"""The `rayscale ui` web app (Starlette): clusters, a cluster's timeline, its jobs' logs.

Pages are Jinja2 templates with autoescape on, so every name is shown as text;
the timeline is a plotly figure (ui/figures.py) drawn by the plotly.min.js
bundled in the plotly wheel, served from /static (no CDN: nothing here needs
the network). The history is opened read-only: the UI never blocks an
autoscaler writing its rounds.
"""

from __future__ import annotations

import gzip
import ipaddress
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from rayscale import procs
from rayscale.history.store import ClusterRow, HistoryError, HistoryStore
from rayscale.local.store import ClusterDir
from rayscale.ui.figures import figure_html, timeline_figure

TEMPLATES = Path(__file__).parent / "templates"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
EVENTS_SHOWN = 300  # the table's last events; the timeline has all of them
LOG_TAIL_BYTES = 512 * 1024


class HostError(ValueError):
    """A listen address that is not loopback, without the flag that allows it."""


def check_host(host: str, allow_remote: bool = False) -> str:
    """Loopback only (127.0.0.0/8, ::1, localhost) unless ``allow_remote``: the pages
    have no login, and they show what every cluster of this user did."""
    if host == "localhost":
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise HostError(f"--host: {host!r} is not an IP address (or localhost)") from None
    if not address.is_loopback and not allow_remote:
        raise HostError(f"--host: {host} is not a loopback address; the UI has no login, "
                        "so it listens on loopback unless --allow-remote says otherwise")
    return host


def _fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "–"


def _fmt_span(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def live_state(row: ClusterRow, home: Path | None = None) -> str:
    """``running`` (its head runs: the Ray dashboard link works), ``finished`` (shut
    down), or ``lost`` (no shutdown recorded, but nothing of it runs)."""
    if row.gone is not None:
        return "finished"
    if row.mode != "local":
        return "running"
    cdir = ClusterDir(row.name, home)
    try:
        record = cdir.load() if cdir.exists() else None
    except (OSError, ValueError):
        record = None
    if record is None or record.id != row.uid or record.head_pid is None:
        return "lost"
    return "running" if procs.is_alive(record.head_pid) else "lost"


class UI:
    """The app's state: where the history is, and its read-only connection."""

    def __init__(self, history: Path, home: Path | None = None) -> None:
        self.history = history
        self.home = home
        self._store: HistoryStore | None = None
        self._plotly_gz: bytes | None = None
        self._lock = threading.Lock()
        self.env = Environment(loader=FileSystemLoader(TEMPLATES),
                               autoescape=select_autoescape(default=True,
                                                            default_for_string=True))
        self.env.globals.update(fmt_time=_fmt_time, fmt_span=_fmt_span)

    def store(self) -> HistoryStore | None:
        with self._lock:  # the pages run in a thread pool: one connection for all
            if self._store is None and self.history.exists():
                self._store = HistoryStore(self.history, readonly=True)
            return self._store

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def clusters(self, request: Request) -> Response:
        store = self.store()
        rows = store.clusters() if store is not None else []
        return self.render("clusters.html", clusters=[(r, live_state(r, self.home)) for r in rows],
                           history=self.history)

    def cluster(self, request: Request) -> Response:
        store = self.store()
        cid = int(request.path_params["cid"])
        row = store.cluster(cid) if store is not None else None
        if store is None or row is None:
            return self.render("missing.html", 404, what=f"cluster {cid}")
        state = live_state(row, self.home)
        timeline = store.timeline(cid)
        end = row.gone or (time.time() if state == "running" else row.last_ts or row.created)
        figure = figure_html(timeline_figure(timeline, end))
        events = timeline.events[-EVENTS_SHOWN:]
        return self.render(
            "cluster.html", cluster=row, state=state, figure=figure,
            events=list(reversed(events)), total_events=len(timeline.events),
            jobs=store.jobs(cid), groups=timeline.groups, duration=end - row.created,
        )

    def job_log(self, request: Request) -> Response:
        store = self.store()
        jid = int(request.path_params["jid"])
        job = store.job(jid) if store is not None else None
        if store is None or job is None:
            return self.render("missing.html", 404, what=f"job {jid}")
        text, cut = "", False
        if job.log_path:
            path = Path(job.log_path)
            try:
                size = path.stat().st_size
                with path.open("rb") as log:
                    if size > LOG_TAIL_BYTES:
                        log.seek(size - LOG_TAIL_BYTES)
                        cut = True
                    text = log.read().decode(errors="replace")
            except OSError:
                text = ""
        return self.render("job_log.html", job=job, text=text, cut=cut,
                           cluster_id=store.job_cluster(jid))

    def plotly_js(self, request: Request) -> Response:  # not async: gzip runs off the loop
        """plotly.min.js (4.8 MB) from the wheel: gzipped once, then sent as is
        (1.5 MB) to every browser that takes gzip, and cached by it for a day."""
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=headers)
        if self._plotly_gz is None:
            self._plotly_gz = gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=6, mtime=0)
        return Response(self._plotly_gz, media_type="text/javascript",
                        headers={**headers, "Content-Encoding": "gzip"})


#: Host headers a loopback UI answers (with the address it listens on): a page from
#: another site whose name re-resolves to 127.0.0.1 (DNS rebinding) is refused.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def make_app(history: Path, home: Path | None = None,
             hosts: Sequence[str] | None = LOOPBACK_NAMES) -> Starlette:
    """``hosts``: the Host headers answered (None: any, for ``--allow-remote``)."""
    ui = UI(history, home)
    allowed = ["*"] if hosts is None else list(hosts)
    app = Starlette(
        routes=[
            Route("/", ui.clusters),
            Route("/clusters/{cid:int}", ui.cluster),
            Route("/jobs/{jid:int}/log", ui.job_log),
            Route("/static/plotly.min.js", ui.plotly_js),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed),
                    Middleware(GZipMiddleware, minimum_size=1000)],
    )
    app.state.ui = ui
    return app


def open_history(history: Path) -> None:
    """Fail early on a history file this rayscale cannot read (newer schema)."""
    if history.exists():
        HistoryStore(history, readonly=True).close()


__all__ = ["HistoryError", "HostError", "check_host", "make_app", "open_history"]
