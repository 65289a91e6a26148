"""`rayscale ui` listens on loopback only, escapes every name, and keeps its history."""

from __future__ import annotations

import gzip
import html
import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rayscale.cli.main import app
from rayscale.ui.app import HostError, check_host
from tests import netcheck
from tests.uibrowser import serve_ui, small_history

EVIL = "<script>alert(1)</script>"
EVIL_GROUP = "<script>"
EVIL_MESSAGE = '<img src=x onerror="alert(2)">'


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.77.0.3", "::1", "localhost"])
def test_loopback_hosts_are_allowed(host: str) -> None:
    assert check_host(host) == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.1.5", "example.org"])
def test_other_hosts_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(HostError, match="--host"):
        check_host(host)
    if host != "example.org":
        assert check_host(host, allow_remote=True) == host


def test_cli_refuses_a_non_loopback_host_and_a_bad_retention(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["ui", "--host", "0.0.0.0", "--history", str(tmp_path / "h")])
    assert out.exit_code == 2 and "not a loopback address" in out.output
    out = runner.invoke(app, ["ui", "--retention", "soon", "--history", str(tmp_path / "h")])
    assert out.exit_code == 2 and "--retention" in out.output
    out = runner.invoke(app, ["ui", "--history", str(tmp_path / "h")],
                        env={"RAYSCALE_HISTORY_RETENTION": "7 days"})
    assert out.exit_code == 2 and "RAYSCALE_HISTORY_RETENTION" in out.output


@pytest.mark.parametrize("host", ["127.0.0.1", "127.77.0.3"])
def test_ui_listens_on_exactly_that_loopback_address(tmp_path: Path, host: str) -> None:
    history = tmp_path / "history.sqlite3"
    small_history(history, "demo", "small")
    with serve_ui(history, host=host) as ui:
        status, body = _get(ui.url + "/")
        assert status == 200 and "demo" in body
        listening = [s for s in netcheck.listeners([ui.proc.pid]) if s.proto.startswith("tcp")]
        port = int(ui.url.rsplit(":", 1)[1])
        assert [(s.ip, s.port, s.loopback) for s in listening] == [(host, port, True)]


def test_every_name_is_escaped_in_pages_and_in_the_figure(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    log = tmp_path / "job.log"
    log.write_text(f"hello from the job {EVIL}\n")
    cid = small_history(history, EVIL, EVIL_GROUP, job_log=log)
    conn = sqlite3.connect(history)  # an event message with markup in it, too
    conn.execute("UPDATE events SET message = ? WHERE kind = 'registered'", (EVIL_MESSAGE,))
    conn.commit()
    conn.close()
    with serve_ui(history) as ui:
        pages = {path: _get(ui.url + path) for path in ["/", f"/clusters/{cid}", "/jobs/1/log"]}
    for path, (status, body) in pages.items():
        assert status == 200, path
        assert EVIL not in body and EVIL_MESSAGE not in body, path
        assert html.escape(EVIL, quote=False) in body or html.escape(EVIL) in body, path
    _, cluster_page = pages[f"/clusters/{cid}"]
    # the only scripts are plotly.min.js and the figure plotly wrote; inside the figure's
    # JSON the names are HTML-escaped and '<' is \u003c
    assert cluster_page.count("<script") == 2
    assert '<script src="/static/plotly.min.js"></script>' in cluster_page
    figure = cluster_page.split("Plotly.newPlot", 1)[1].split("</script>", 1)[0]
    assert "<" not in figure.replace("&lt;", "")
    assert "&lt;script&gt;" in figure  # the group's name, as text for plotly
    assert "hello from the job" in pages["/jobs/1/log"][1]


def test_history_survives_a_restart_of_the_ui_and_retention_prunes(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    now = time.time()
    small_history(history, "recent", "g", now=now)
    small_history(history, "ancient", "g", now=now - 3 * 3600)  # gone 2h55m ago
    small_history(history, "running-one", "g", now=now, gone=False)
    with serve_ui(history) as ui:
        first = _get(ui.url + "/")[1]
    assert all(n in first for n in ("recent", "ancient", "running-one"))
    with serve_ui(history) as ui:  # restarted: the same history
        again = _get(ui.url + "/")[1]
        assert _get(ui.url + "/clusters/1")[0] == 200
    assert all(n in again for n in ("recent", "ancient", "running-one"))
    assert "lost" in again  # no shutdown recorded and nothing runs: not "running"
    with serve_ui(history, "--retention", "1h") as ui:
        pruned = _get(ui.url + "/")[1]
        assert _get(ui.url + "/clusters/99")[0] == 404
    assert "recent" in pruned and "running-one" in pruned and "ancient" not in pruned
    assert os.stat(history).st_size > 0


def test_plotly_js_is_served_from_the_wheel(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    small_history(history, "demo", "g")
    with serve_ui(history) as ui:
        status, body = _get(ui.url + "/static/plotly.min.js")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(ui.url + "/static/plotly.min.js",
                                         headers={"Accept-Encoding": "gzip"})
        with opener.open(request, timeout=30) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            packed = response.read()
    assert status == 200 and len(body) > 1_000_000 and "plotly" in body[:2000].lower()
    assert gzip.decompress(packed).decode() == body and len(packed) < len(body) / 2


def test_a_request_for_another_host_name_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page of evil.example re-resolved to 127.0.0.1 sends its own Host."""
    history = tmp_path / "history.sqlite3"
    small_history(history, "demo", "g")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with serve_ui(history) as ui:
        assert _get(ui.url + "/")[0] == 200
        request = urllib.request.Request(ui.url + "/", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=30)
        assert refused.value.code == 400
