"""`rayscale ui` in a subprocess and Debian's Chromium driven by playwright, for the UI tests.

Playwright's own browser download is never used: ``executable_path`` is
Debian's ``/usr/bin/chromium``, started with the flags that keep it off the
network (no background networking, component updates or sync), and the tests
run inside scripts/loopback-only.sh anyway.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayscale import ports
from tests.childproc import stop_child

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
]
ARTIFACTS = Path(os.environ.get("RAYSCALE_TEST_ARTIFACTS",
                                Path(__file__).parent / "artifacts"))


@dataclass
class UIServer:
    url: str
    proc: subprocess.Popen[str]


@contextmanager
def serve_ui(history: Path, *args: str, env: dict[str, str] | None = None,
             host: str = "127.0.0.1") -> Iterator[UIServer]:
    """``rayscale ui --history HISTORY --port 0`` (the port it holds is the one it prints),
    stopped by its pid after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayscale.cli.main", "ui", "--host", host, "--port", "0",
         "--history", str(history), *args],
        env=env or dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:  # the line naming its address comes before it serves
            found = re.search(r"rayscale ui: (http://\S+?)/ ", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            raise AssertionError(f"rayscale ui did not start (exit {proc.wait(10)})")
        # what it writes later is read and dropped: a full pipe would block it
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        host_port = url.removeprefix("http://").rsplit(":", 1)
        deadline = time.monotonic() + 30
        while not ports.accepts(host_port[0].strip("[]"), int(host_port[1])):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("rayscale ui did not start serving")
            time.sleep(0.1)
        yield UIServer(url, proc)
    finally:
        stop_child(proc)  # our unreaped child: its PID cannot have been reused


@dataclass
class PageRun:
    """What the browser saw: console messages and uncaught errors, and trace sizes."""

    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    traces: dict[str, int] = field(default_factory=dict)
    legend: list[str] = field(default_factory=list)
    hovers: list[str] = field(default_factory=list)
    title: str = ""
    load_s: float = 0.0  # the first load: nothing cached
    reloads_s: list[float] = field(default_factory=list)  # plotly.min.js from the cache

    @property
    def problems(self) -> list[str]:
        return self.errors + [f"{kind}: {text}" for kind, text in self.console
                              if kind in ("error", "warning")]


DRAWN = ("() => { const d = document.getElementById('timeline');"
         " return d && d._fullLayout && d.querySelector('.main-svg'); }")


def open_timeline(url: str, screenshot: Path | None = None, reloads: int = 0) -> PageRun:
    """Load a cluster page in headless Chromium until plotly drew the timeline (and
    ``reloads`` more times in the same profile, as a user coming back would)."""
    from playwright.sync_api import sync_playwright

    run = PageRun()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: run.console.append((m.type, m.text)))
            page.on("pageerror", lambda e: run.errors.append(str(e)))
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_function(DRAWN, timeout=60_000)
            run.load_s = time.perf_counter() - started
            for _ in range(reloads):
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_function(DRAWN, timeout=60_000)
                run.reloads_s.append(time.perf_counter() - started)
            data: Any = page.evaluate(
                "document.getElementById('timeline').data.map(t => [t.name, t.x.length])")
            run.traces = {str(name): int(n) for name, n in data}
            run.legend = page.eval_on_selector_all(".legendtext",
                                                   "els => els.map(e => e.textContent)")
            run.hovers = page.evaluate(
                "document.getElementById('timeline').data"
                ".flatMap(t => t.hovertext || [])")
            run.title = page.title()
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return run


def small_history(path: Path, name: str, group: str, now: float | None = None,
                  gone: bool = True, job_log: Path | None = None) -> int:
    """A finished cluster's history: 3 launches up to 3 nodes of ``group``, 3 idle stops,
    a registration (not plotted), a backoff and (with ``job_log``) a job; returns the
    cluster's id."""
    from rayscale.history.store import HistoryStore

    now = now or time.time()
    t0 = now - 300
    store = HistoryStore(path)
    cid = store.record_cluster(f"uid-{name}-{t0}", name, "local", t0, "http://127.9.0.2:1")
    for i in range(3):
        store.record_round(f"uid-{name}-{t0}", t0 + 10 * i, {(group, "pending"): 1,
                                                            (group, "running"): i},
                           {"tasks": 3 - i})
        store.record_event(f"uid-{name}-{t0}", {
            "ts": t0 + 10 * i, "kind": "launch", "group": group, "reason": "tasks",
            "message": f"launched 1 x {group} (w-{i}) for tasks"}, f"demand: {3 - i} pending tasks")
    store.record_round(f"uid-{name}-{t0}", t0 + 40, {(group, "pending"): 0,
                                                    (group, "running"): 3}, {"tasks": 0})
    store.record_event(f"uid-{name}-{t0}", {"ts": t0 + 41, "kind": "registered", "group": group,
                                            "node": "w-0", "message": "node w-0 registered"})
    store.record_event(f"uid-{name}-{t0}", {"ts": t0 + 50, "kind": "backoff", "group": group,
                                            "message": f"group {group} not launchable for 10s"})
    for i in range(3):
        store.record_round(f"uid-{name}-{t0}", t0 + 100 + 10 * i, {(group, "running"): 2 - i},
                           {})
        store.record_event(f"uid-{name}-{t0}", {
            "ts": t0 + 100 + 10 * i, "kind": "stop", "group": group, "node": f"w-{i}",
            "reason": "idle", "message": f"stopping w-{i} (idle)"}, "idle 62 s")
    if job_log is not None:
        store.record_job(f"{name}-job", t0 + 5, name, "SUCCEEDED", "sub-1",
                         log_path=str(job_log), ended=t0 + 90)
    if gone:
        store.mark_gone(f"uid-{name}-{t0}", t0 + 200)
    store.close()
    return cid
