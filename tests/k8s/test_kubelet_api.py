"""The vnode's kubelet API through the real kubectl: logs, exec, port-forward, its guard."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pty
import re
import select
import socket
import ssl
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Node, Pod, Service

from rayscale.devcluster import DevCluster
from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import PY, pod_body, wait_phase

TIMEOUT_S = 60


def kubectl(bins: Path, cluster: DevCluster, *args: str, stdin: str | None = None,
            timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bins / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture
def kc(k8s_bin_dir: Path, dev_cluster: DevCluster) -> Any:
    if not (k8s_bin_dir / "kubectl").exists():
        pytest.skip("kubectl not built (bash scripts/build-k8s.sh)")

    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return kubectl(k8s_bin_dir, dev_cluster, *args, **kw)

    return run


def _running(kube: Client, name: str, namespace: str) -> Pod:
    return wait_phase(kube, name, namespace, {"Running"}, TIMEOUT_S)


def _lines(n: int, tag: str) -> list[str]:
    return [f"{tag} line {i}" for i in range(n)]


def test_logs_options(kube: Client, kc: Any, namespace: str) -> None:
    script = "\n".join(f"print({line!r})" for line in _lines(10, "main"))
    script += "\nimport sys, time\nsys.stdout.flush()\ntime.sleep(3600)\n"
    side = {"name": "side", "image": "busybox", "command": [
        PY, "-c", "print('side says hi', flush=True)\nimport time; time.sleep(3600)"]}
    body = pod_body("logs", namespace, [PY, "-c", script],
                    extra_spec={"containers": [{"name": "main", "image": "busybox",
                                                "command": [PY, "-c", script]}, side]})
    kube.create(body)
    _running(kube, "logs", namespace)
    want = "\n".join(_lines(10, "main")) + "\n"
    wait_for(lambda: kc("logs", "logs", "-c", "main", "-n", namespace).stdout == want,
             TIMEOUT_S, "main's ten lines")
    assert kc("logs", "logs", "-c", "side", "-n", namespace).stdout == "side says hi\n"
    tail = kc("logs", "logs", "-c", "main", "-n", namespace, "--tail=3").stdout
    assert tail.splitlines() == _lines(10, "main")[-3:]
    stamped = kc("logs", "logs", "-c", "main", "-n", namespace, "--timestamps").stdout
    first = stamped.splitlines()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z main line 0", first), first
    assert kc("logs", "logs", "-c", "main", "-n", namespace, "--since=1h").stdout == want
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert kc("logs", "logs", "-c", "main", "-n", namespace,
              f"--since-time={future}").stdout == ""
    assert kc("logs", "logs", "-c", "main", "-n", namespace,
              "--limit-bytes=6").stdout == "main l"
    bad = kc("logs", "logs", "-c", "nope", "-n", namespace)
    assert bad.returncode != 0 and "container nope is not valid" in bad.stderr, bad.stderr


def test_logs_follow_until_exit(kube: Client, kc: Any, namespace: str) -> None:
    script = ("import time\n"
              "for i in range(5):\n"
              "    print('tick', i, flush=True)\n"
              "    time.sleep(0.5)\n")
    kube.create(pod_body("follow", namespace, [PY, "-c", script]))
    wait_phase(kube, "follow", namespace, {"Running", "Succeeded"}, TIMEOUT_S)
    out = kc("logs", "-f", "follow", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"tick {i}" for i in range(5)]


def test_logs_previous_after_restart(kube: Client, kc: Any, namespace: str) -> None:
    script = ("import os, sys, time\n"
              "flag = os.path.join(os.environ['HOME'], 'second')\n"
              "if os.path.exists(flag):\n"
              "    print('second run', flush=True); time.sleep(3600)\n"
              "open(flag, 'w').close()\n"
              "print('first run', flush=True)\n"
              "sys.exit(3)\n")
    kube.create(pod_body("prev", namespace, [PY, "-c", script], restart_policy="Always"))

    def restarted() -> bool:
        pod = kube.get(Pod, "prev", namespace=namespace)
        st = (pod.status.containerStatuses or []) if pod.status else []
        return bool(st) and st[0].restartCount >= 1 and st[0].state is not None and \
            st[0].state.running is not None

    wait_for(restarted, TIMEOUT_S, "a restarted container")
    wait_for(lambda: kc("logs", "prev", "-n", namespace).stdout == "second run\n", TIMEOUT_S,
             "the second run's log")
    prev = kc("logs", "prev", "-n", namespace, "--previous")
    assert prev.stdout == "first run\n", prev.stderr
    fresh = "fresh"
    kube.create(pod_body(fresh, namespace, [PY, "-c", "import time; time.sleep(3600)"]))
    _running(kube, fresh, namespace)
    none = kc("logs", fresh, "-n", namespace, "--previous")
    assert none.returncode != 0 and "previous terminated container" in none.stderr


@pytest.fixture
def sleeper(kube: Client, namespace: str) -> str:
    body = pod_body("sleeper", namespace, [PY, "-c", "import time; time.sleep(3600)"],
                    env=[{"name": "GREETING", "value": "hello from the pod"}])
    kube.create(body)
    _running(kube, "sleeper", namespace)
    return "sleeper"


def test_exec_exit_code_env_and_namespaces(kc: Any, namespace: str, sleeper: str) -> None:
    out = kc("exec", sleeper, "-n", namespace, "-c", "main", "--", "sh", "-c",
             'echo "$GREETING"; echo to-stderr >&2; hostname; exit 3')
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines() == ["hello from the pod", sleeper]
    assert "to-stderr" in out.stderr
    hosts = kc("exec", sleeper, "-n", namespace, "--", "cat", "/etc/hosts")
    assert hosts.returncode == 0 and sleeper in hosts.stdout, hosts
    assert kc("exec", sleeper, "-n", namespace, "--", "true").returncode == 0


def test_exec_stdin(kc: Any, namespace: str, sleeper: str) -> None:
    out = kc("exec", "-i", sleeper, "-n", namespace, "--", "sh", "-c", "cat; echo done",
             stdin="line one\nline two\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "line one\nline two\ndone\n"


def test_exec_tty(k8s_bin_dir: Path, dev_cluster: DevCluster, namespace: str,
                  sleeper: str) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 101, 0, 0))
    proc = subprocess.Popen([str(k8s_bin_dir / "kubectl"), f"--kubeconfig={dev_cluster.kubeconfig}",
                             "exec", "-it", sleeper, "-n", namespace, "--", "sh"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    try:
        os.write(master, b"stty size; echo tty-$((40 + 2)); exit 7\n")
        deadline = time.monotonic() + TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                with contextlib.suppress(OSError):
                    out += os.read(master, 65536)
        with contextlib.suppress(OSError):
            while select.select([master], [], [], 0.2)[0]:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                out += chunk
        assert proc.wait(5) == 7, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "37 101" in text and "tty-42" in text, text


def test_exec_errors(kc: Any, namespace: str, sleeper: str) -> None:
    missing = kc("exec", "no-such-pod", "-n", namespace, "--", "true")
    assert missing.returncode == 1
    assert 'pods "no-such-pod" not found' in missing.stderr, missing.stderr
    bad = kc("exec", sleeper, "-n", namespace, "-c", "nope", "--", "true")
    assert bad.returncode == 1
    assert "container nope not found" in bad.stderr or "not valid" in bad.stderr, bad.stderr


@contextlib.contextmanager
def _port_forward(k8s_bin_dir: Path, cluster: DevCluster, namespace: str,
                  target: str) -> Iterator[int]:
    proc = subprocess.Popen([str(k8s_bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}",
                             "port-forward", "-n", namespace, target, ":8080" if
                             target.startswith("pod/") else ":80"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        assert found, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr
                              else "")
        yield int(found.group(1))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_port_forward_pod_and_service(kube: Client, k8s_bin_dir: Path,
                                      dev_cluster: DevCluster, namespace: str) -> None:
    if not (k8s_bin_dir / "kubectl").exists():
        pytest.skip("kubectl not built")
    script = ("import http.server, os, socketserver\n"
              "class H(http.server.BaseHTTPRequestHandler):\n"
              "    def do_GET(self):\n"
              "        body = ('served by ' + os.environ['HOSTNAME']).encode()\n"
              "        self.send_response(200)\n"
              "        self.send_header('Content-Length', str(len(body)))\n"
              "        self.end_headers(); self.wfile.write(body)\n"
              "http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n")
    kube.create(pod_body("web", namespace, [PY, "-c", script], labels={"app": "web"},
                         env=[{"name": "POD_IP",
                               "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                         container={"ports": [{"name": "http", "containerPort": 8080}]}))
    kube.create(cast(Service, Service.from_dict({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web-svc", "namespace": namespace},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })))
    pod = _running(kube, "web", namespace)
    assert pod.status is not None and pod.status.podIP
    pod_ip = pod.status.podIP

    def listening() -> bool:
        socket.create_connection((pod_ip, 8080), timeout=5).close()
        return True

    # kubectl ends a port-forward at the first refused connection: the server first
    wait_for(listening, TIMEOUT_S, "the pod's HTTP server")

    def get(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            return cast(str, r.read().decode())

    for target in ("pod/web", "svc/web-svc"):
        with _port_forward(k8s_bin_dir, dev_cluster, namespace, target) as port:
            answer = wait_for(functools.partial(get, port), TIMEOUT_S, f"HTTP through {target}")
            assert answer == "served by web"
            assert get(port) == "served by web"  # a second connection on the same tunnel


def _kubelet_address(kube: Client, vnode: VNodeProcess) -> tuple[str, int]:
    node = kube.get(Node, vnode.node_names()[0])
    assert node.status is not None and node.status.daemonEndpoints is not None
    endpoint = node.status.daemonEndpoints.kubeletEndpoint
    assert endpoint is not None and endpoint.Port
    ip = next(a.address for a in node.status.addresses or [] if a.type == "InternalIP")
    return ip, endpoint.Port


def _call(ip: str, port: int, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection((ip, port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := conn.recv(4096):
            out += chunk
        return out


def test_only_the_api_server_may_call(kube: Client, vnode: VNodeProcess,
                                      dev_cluster: DevCluster) -> None:
    ip, port = _kubelet_address(kube, vnode)
    assert ip.startswith("127.") and ip != "127.0.0.1"
    pki = dev_cluster.pki
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    # no client certificate: TLS 1.3 fails it after the client's handshake, on the first read
    try:
        refused = _call(ip, port, ctx)
    except (ssl.SSLError, ConnectionError):
        refused = b""
    assert refused == b"", refused
    ctx.load_cert_chain(pki.client_cert("admin"), pki.client_key("admin"))
    assert _call(ip, port, ctx).startswith(b"HTTP/1.1 403")  # the CA's, but not the API server
    ctx2 = ssl.create_default_context()
    ctx2.check_hostname, ctx2.verify_mode = False, ssl.CERT_NONE
    ctx2.load_cert_chain(pki.client_cert("kubelet-client"), pki.client_key("kubelet-client"))
    assert _call(ip, port, ctx2).startswith(b"HTTP/1.1 200")
    # its serving certificate is the cluster CA's, for the Node's address
    verified = ssl.create_default_context(cafile=str(pki.ca_cert))
    verified.load_cert_chain(pki.client_cert("kubelet-client"), pki.client_key("kubelet-client"))
    with socket.create_connection((ip, port), timeout=10) as raw, \
            verified.wrap_socket(raw, server_hostname=ip) as conn:
        assert conn.getpeercert() is not None
    with pytest.raises(OSError):  # nothing on the wildcard / the plain loopback address
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_exec_hung_up_when_kubectl_goes(k8s_bin_dir: Path, dev_cluster: DevCluster,
                                        namespace: str, sleeper: str) -> None:
    proc = subprocess.Popen([str(k8s_bin_dir / "kubectl"), f"--kubeconfig={dev_cluster.kubeconfig}",
                             "exec", sleeper, "-n", namespace, "--", "sh", "-c",
                             "echo $$; exec sleep 3600"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert os.path.exists(f"/proc/{pid}")
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), TIMEOUT_S, "the exec'd command gone")
