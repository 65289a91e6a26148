"""The vnode's probe state machine (pure logic, a fake clock) and its actions on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
from lightkube.models.core_v1 import (
    Container,
    ContainerPort,
    ExecAction,
    HTTPGetAction,
    Probe,
    TCPSocketAction,
)

from rayscale.vnode.probes import (
    Action,
    ContainerProbes,
    ProbeSpec,
    ProbeState,
    parse_probe,
    run_http,
    run_tcp,
)

IP = "127.0.0.1"  # the unit tests' own loopback servers (no Ray here)


def spec(kind: str = "readiness", **kw: float) -> ProbeSpec:
    return ProbeSpec(kind=kind, action=Action("tcp", host=IP, port=1), **kw)  # type: ignore[arg-type]


def test_defaults_are_kubernetes() -> None:
    c = Container(name="c", ports=[ContainerPort(containerPort=8080, name="http")])
    s = parse_probe("readiness", Probe(httpGet=HTTPGetAction(port="http")), c, "127.9.0.2")
    assert (s.period_s, s.timeout_s, s.success_threshold, s.failure_threshold,
            s.initial_delay_s) == (10, 1, 1, 3, 0)
    assert s.action.kind == "http" and s.action.port == 8080 and s.action.host == "127.9.0.2"
    assert s.action.path == "/" and s.action.scheme == "HTTP"
    t = parse_probe("liveness", Probe(tcpSocket=TCPSocketAction(port="http")), c, "127.9.0.2")
    assert t.action.kind == "tcp" and t.action.port == 8080
    e = parse_probe("startup", Probe(exec=ExecAction(command=["true"])), c, "127.9.0.2")
    assert e.action.command == ("true",)


def test_unknown_named_port_or_remote_host_is_a_failing_probe() -> None:
    c = Container(name="c")
    assert parse_probe("readiness", Probe(tcpSocket=TCPSocketAction(port="nope")), c,
                       IP).action.kind == "unsupported"
    remote = Probe(httpGet=HTTPGetAction(port=80, host="10.0.0.1"))
    assert parse_probe("readiness", remote, c, IP).action.kind == "unsupported"


def test_first_run_after_initial_delay_then_every_period() -> None:
    st = ProbeState(spec(initial_delay_s=5, period_s=10), started=100.0)
    assert not st.due(104.9) and st.due(105.0)
    st.begin(105.0)
    assert not st.due(200.0)  # in flight: never two runs at once
    st.record(True)
    assert not st.due(114.9) and st.due(115.0)


def test_readiness_starts_unready_and_needs_success_threshold() -> None:
    st = ProbeState(spec(success_threshold=2, failure_threshold=3), started=0.0)
    assert st.result is False
    assert st.record(True) is False and st.result is False
    assert st.record(True) is True and st.result is True
    assert st.record(False) is False and st.record(False) is False
    assert st.record(False) is True and st.result is False
    assert st.record(True) is False  # the success count restarted after the failures


def test_liveness_fails_after_failure_threshold_and_success_resets() -> None:
    st = ProbeState(spec("liveness", failure_threshold=2), started=0.0)
    assert st.result is True and not st.failed_for_good
    st.record(False)
    st.record(True)
    st.record(False)
    assert not st.failed_for_good
    assert st.record(False) is True and st.failed_for_good


def test_startup_gates_the_others_and_failure_means_restart() -> None:
    probes = ContainerProbes(startup=ProbeState(spec("startup", failure_threshold=2), 0.0),
                             liveness=ProbeState(spec("liveness"), 0.0),
                             readiness=ProbeState(spec("readiness"), 0.0))
    assert probes.active() == [probes.startup] and not probes.started and not probes.ready
    assert probes.startup is not None
    probes.startup.record(False)
    assert probes.kill_reason() is None
    probes.startup.record(False)
    assert probes.kill_reason() is probes.startup


def test_startup_success_lets_readiness_and_liveness_run() -> None:
    probes = ContainerProbes(startup=ProbeState(spec("startup"), 0.0),
                             readiness=ProbeState(spec("readiness"), 0.0))
    assert probes.startup is not None and probes.readiness is not None
    probes.startup.record(True)
    assert probes.started and probes.active() == [probes.readiness] and not probes.ready
    probes.readiness.record(True)
    assert probes.ready


def test_no_probes_means_ready() -> None:
    assert ContainerProbes().ready and ContainerProbes().started


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            code = 200 if self.path == "/ok" else 503
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"success" if code == 200 else b"no")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((IP, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_http_and_tcp_actions(http_server: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = http_server
    ok = Action("http", host=IP, port=port, path="/ok", headers=(("X-Probe", "yes"),))
    assert run_http(ok, 2.0)[0] is True
    assert seen[-1].get("X-Probe") == "yes"
    assert seen[-1].get("User-Agent", "").startswith("kube-probe/")
    bad, message = run_http(Action("http", host=IP, port=port, path="/bad"), 2.0)
    assert bad is False and "503" in message
    assert run_tcp(Action("tcp", host=IP, port=port), 2.0)[0] is True
    with socket.socket() as s:  # a port nothing listens on
        s.bind((IP, 0))
        closed = s.getsockname()[1]
    assert run_tcp(Action("tcp", host=IP, port=closed), 2.0)[0] is False
    assert run_http(Action("http", host=IP, port=closed), 2.0)[0] is False
