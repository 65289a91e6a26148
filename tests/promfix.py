"""A real Prometheus for the tests (Debian's ``prometheus`` package), and the
Grafana dashboards' queries sent to it.

:func:`prometheus_server` starts ``/usr/bin/prometheus`` on 127.0.0.1 and a free
port with its storage in a temp dir, in a process group of its own, and stops
exactly that process (its PID; our own unreaped child) when the test is done,
also on failure. Debian's service is never used. :func:`panel_queries` turns a
dashboard's panels into PromQL Prometheus accepts, Grafana's variables replaced.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayscale.ports import free_port
from tests.childproc import stop_child

PROMETHEUS_HOST = "127.0.0.1"
#: what Grafana puts in for its own variables, for a 1 s scrape interval:
#: ``$__rate_interval`` is at least 4 scrape intervals
GRAFANA_BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "10m",
                    "__range_s": "600", "__interval_ms": "2000"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Prometheus:
    url: str
    pid: int

    def get(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with _OPENER.open(f"{self.url}{path}?{query}", timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the reason in JSON
            return json.loads(exc.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (raises on a query Prometheus refuses)."""
        answer = self.get("/api/v1/query", query=expr)
        if answer.get("status") != "success":
            raise AssertionError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def query_range(self, expr: str, seconds: float, step: float = 2.0) -> list[dict[str, Any]]:
        """``expr`` over the last ``seconds``, as Grafana's time series panels ask."""
        end = time.time()
        answer = self.get("/api/v1/query_range", query=expr, start=str(end - seconds),
                          end=str(end), step=str(step))
        if answer.get("status") != "success":
            raise AssertionError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.get("/api/v1/targets", state="active")["data"][
            "activeTargets"]
        return active

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.get(f"/api/v1/label/{label}/values", **{"match[]": match})[
            "data"]
        return values


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise RuntimeError("prometheus is not installed: run scripts/install.sh")
    return found


def file_sd_config(sd_glob: str, scrape_interval: str = "1s") -> str:
    """A prometheus.yml scraping every target of the file_sd files ``sd_glob``."""
    return (
        f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: "
        f"{scrape_interval}\n  scrape_timeout: {scrape_interval}\n"
        "scrape_configs:\n  - job_name: rayscale\n    file_sd_configs:\n"
        f"      - files: [{json.dumps(sd_glob)}]\n        refresh_interval: 1s\n"
    )


@contextlib.contextmanager
def prometheus_server(workdir: Path, config: str) -> Iterator[Prometheus]:
    """Prometheus with ``config`` (prometheus.yml text) on 127.0.0.1, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(config)
    port = free_port()
    argv = [prometheus_binary(), f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={PROMETHEUS_HOST}:{port}",
            "--storage.tsdb.retention.time=1h", "--log.level=warn"]
    log = (workdir / "prometheus.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=workdir)
    log.close()
    server = Prometheus(f"http://{PROMETHEUS_HOST}:{port}", proc.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), _OPENER.open(f"{server.url}/-/ready",
                                                             timeout=2) as answer:
                if answer.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start: "
                                   + (workdir / "prometheus.log").read_text()[-3000:])
            time.sleep(0.1)
        yield server
    finally:
        stop_child(proc, 20)  # our unreaped child: its PID cannot have been reused


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with Grafana's variables (``$x``, ``${x}``, ``${x:fmt}``) replaced."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return {**GRAFANA_BUILTINS, **values}[name]

    return _VARIABLE.sub(one, expr)


def panel_queries(board: dict[str, Any], values: Mapping[str, str]
                  ) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL) of every query of every panel of a dashboard."""
    out = []
    every = [p for top in board["panels"] for p in [top, *(top.get("panels") or [])]]
    for panel in every:
        for target in panel.get("targets") or []:
            out.append((panel["title"], target["refId"], substitute(target["expr"], values)))
    return out
