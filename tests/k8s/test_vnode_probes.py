"""Probes on the virtual node: readiness gates Ready, liveness restarts, startup gates both.

The containers are small Python programs whose answers the test switches with
flag files in the pod's ``HOME`` (a directory of the pod's own in the vnode's
state dir), so nothing here waits on a clock: each step waits for a state.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.resources.core_v1 import Pod

from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import PY, pod_body, wait_phase

# serves GET on $POD_IP:8080: 200 once $HOME/ready exists, 503 before; counts requests
# in $HOME/hits. Listens only once $HOME/listen exists when LISTEN_FLAG is set.
SERVER = r"""
import http.server, os, time
home = os.environ["HOME"]
flag = lambda name: os.path.exists(os.path.join(home, name))
while os.environ.get("LISTEN_FLAG") and not flag("listen"):
    time.sleep(0.1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(home, "hits"), "a") as f:
            f.write(self.headers.get("X-Probe", "-") + "\n")
        ok = flag("ready")
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"success" if ok else b"not yet")
    def log_message(self, *a):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""

POD_IP = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
PORTS = [{"name": "http", "containerPort": 8080}]


def _home(vnode: VNodeProcess, pod: Pod) -> Path:
    assert pod.metadata is not None
    m = pod.metadata
    return vnode.state_dir / "pods" / f"{m.namespace}_{m.name}_{m.uid}" / "home"


def _status(kube: Client, name: str, ns: str) -> tuple[Pod, dict[str, Any], dict[str, str]]:
    pod = kube.get(Pod, name, namespace=ns)
    assert pod.status is not None
    cs = (pod.status.containerStatuses or [])
    container = cs[0].to_dict() if cs else {}
    conds = {c.type: c.status for c in pod.status.conditions or []}
    return pod, container, conds


def _hits(home: Path) -> list[str]:
    path = home / "hits"
    return path.read_text().split() if path.exists() else []


def test_http_readiness_keeps_pod_unready_until_it_passes(
        kube: Client, vnode: VNodeProcess, namespace: str) -> None:
    probe = {"httpGet": {"port": "http", "path": "/health",
                         "httpHeaders": [{"name": "X-Probe", "value": "vnode"}]},
             "periodSeconds": 1, "failureThreshold": 1}
    kube.create(pod_body("web", namespace, [PY, "-c", SERVER], env=[POD_IP],
                         container={"ports": PORTS, "readinessProbe": probe}))
    pod = wait_phase(kube, "web", namespace, {"Running"})
    home = _home(vnode, pod)
    wait_for(lambda: len(_hits(home)) >= 3, 60, "three failed readiness probes")
    _, container, conds = _status(kube, "web", namespace)
    assert container["ready"] is False and container["started"] is True
    assert conds["Ready"] == "False" and conds["ContainersReady"] == "False"
    assert set(_hits(home)) == {"vnode"}  # httpHeaders sent
    (home / "ready").touch()
    wait_for(lambda: _status(kube, "web", namespace)[2]["Ready"] == "True", 60, "pod Ready")
    _, container, conds = _status(kube, "web", namespace)
    assert container["ready"] is True and conds["ContainersReady"] == "True"
    (home / "ready").unlink()  # failing again: un-Ready again, not restarted
    wait_for(lambda: _status(kube, "web", namespace)[2]["Ready"] == "False", 60,
             "pod un-Ready again")
    assert _status(kube, "web", namespace)[1]["restartCount"] == 0


def test_exec_liveness_failure_restarts_the_container(
        kube: Client, vnode: VNodeProcess, namespace: str) -> None:
    # the exec probe runs inside the pod: its hostname is the pod's, its HOME the pod's
    check = 'test "$(hostname)" = live && test ! -e "$HOME/dead"'
    probe = {"exec": {"command": ["sh", "-c", check]}, "periodSeconds": 1,
             "failureThreshold": 2, "terminationGracePeriodSeconds": 1}
    script = "import time\nprint('up', flush=True)\ntime.sleep(3600)\n"
    kube.create(pod_body("live", namespace, [PY, "-c", script], restart_policy="Always",
                         container={"livenessProbe": probe}))
    pod = wait_phase(kube, "live", namespace, {"Running"})
    home = _home(vnode, pod)
    wait_for(lambda: _status(kube, "live", namespace)[2]["Ready"] == "True", 60, "Ready")
    (home / "dead").touch()
    container = wait_for(
        lambda: (c := _status(kube, "live", namespace)[1]).get("restartCount", 0) >= 1 and c,
        60, "a restart after the liveness probe failed")
    last = container["lastState"]["terminated"]
    assert last["exitCode"] in (137, 143) and last["reason"] == "Error"
    (home / "dead").unlink()  # healthy again: it stays up
    wait_for(lambda: _status(kube, "live", namespace)[1]["state"].get("running"), 60,
             "running again")


def test_startup_probe_gates_readiness(kube: Client, vnode: VNodeProcess,
                                       namespace: str) -> None:
    startup = {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 600}
    readiness = {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1}
    kube.create(pod_body("gated", namespace, [PY, "-c", SERVER],
                         env=[POD_IP, {"name": "LISTEN_FLAG", "value": "1"}],
                         container={"ports": PORTS, "startupProbe": startup,
                                    "readinessProbe": readiness}))
    pod = wait_phase(kube, "gated", namespace, {"Running"})
    home = _home(vnode, pod)
    (home / "ready").touch()  # readiness would pass at once if it ran
    time.sleep(3)  # several startup periods, while nothing listens
    _, container, conds = _status(kube, "gated", namespace)
    assert container["started"] is False and container["ready"] is False
    assert conds["Ready"] == "False" and not _hits(home)  # readiness did not run
    (home / "listen").touch()
    wait_for(lambda: _status(kube, "gated", namespace)[2]["Ready"] == "True", 60, "Ready")
    _, container, _ = _status(kube, "gated", namespace)
    assert container["started"] is True and _hits(home)
