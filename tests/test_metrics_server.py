"""rayscale's /metrics endpoint listens exactly where it is told and asks no DNS server."""

from __future__ import annotations

import os
import socket
import urllib.request
from typing import Any

import pytest
from typer.testing import CliRunner

from rayscale.autoscaler.metrics import AutoscalerMetrics, serve_metrics
from rayscale.cli.main import app
from tests import netcheck


def _no_dns(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"a DNS lookup: {args}")


@pytest.mark.parametrize("host", ["127.77.0.2", "::1"])
def test_metrics_served_on_exactly_that_address_without_a_reverse_lookup(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # http.server's server_bind calls socket.getfqdn(host): a PTR query for 127.77.0.2
    monkeypatch.setattr(socket, "getfqdn", _no_dns)
    monkeypatch.setattr(socket, "gethostbyaddr", _no_dns)
    metrics = AutoscalerMetrics()
    metrics.nodes.labels("small", "running").set(3)
    server = serve_metrics(metrics.registry, host, 0)
    try:
        port = server.server_address[1]
        url_host = f"[{host}]" if ":" in host else host
        body = urllib.request.urlopen(f"http://{url_host}:{port}/metrics", timeout=5).read()
        assert b'rayscale_nodes{group="small",state="running"} 3.0' in body
        mine = [s for s in netcheck.listeners([os.getpid()]) if s.port == port]
        assert [(s.ip, s.loopback) for s in mine] == [(host, True)]
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_host_is_for_kubernetes_mode_only_and_must_be_an_ip() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["autoscaler", "--cluster", "x", "--metrics-host", "127.0.0.1"])
    assert out.exit_code == 2 and "Kubernetes mode" in out.output
    out = runner.invoke(app, ["autoscaler", "--cluster", "x", "--namespace", "ns",
                              "--metrics-host", "metrics.example"])
    assert out.exit_code == 2 and "not an IP address" in out.output
