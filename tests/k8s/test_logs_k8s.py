"""`rayscale logs NAME -n NS`: a RayCluster's pod logs through the dev cluster's API server
(the vnode's kubelet serves them). Pods carry KubeRay's labels; the head pod has the
Ray container and the autoscaler sidecar."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from lightkube import Client

from rayscale.devcluster import DevCluster
from tests.devtools import wait_for
from tests.k8s.helpers import PY, pod_body, wait_phase

RAYSCALE = [sys.executable, "-m", "rayscale.cli.main"]


def _container(name: str, code: str) -> dict[str, Any]:
    return {"name": name, "image": "rayproject/ray:2.60.0", "command": [PY, "-u", "-c", code],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                          "limits": {"cpu": "50m", "memory": "64Mi"}}}


def _pod(kube: Client, name: str, namespace: str, labels: dict[str, str],
         containers: list[dict[str, Any]]) -> None:
    kube.create(pod_body(name, namespace, ["unused"], labels=labels,
                         extra_spec={"containers": containers}))


SLEEP = "import time; time.sleep(3600)"


def test_pod_logs_through_the_api(kube: Client, dev_cluster: DevCluster, namespace: str
                                  ) -> None:
    cluster = {"ray.io/cluster": "demo"}
    _pod(kube, "demo-head-x1", namespace, {**cluster, "ray.io/node-type": "head",
                                            "ray.io/group": "headgroup"},
         [_container("ray-head", f"print('HEAD SAYS'); {SLEEP}"),
          _container("autoscaler", f"print('AUTOSCALER SAYS'); {SLEEP}")])
    _pod(kube, "demo-small-worker-a", namespace, {**cluster, "ray.io/node-type": "worker",
                                                   "ray.io/group": "small"},
         [_container("ray-worker", "import time\nfor i in range(10**6):\n"
                     "    print(f'tick {i}'); time.sleep(0.3)")])
    _pod(kube, "demo-big-worker-b", namespace, {**cluster, "ray.io/node-type": "worker",
                                                 "ray.io/group": "big"},
         [_container("ray-worker", f"print('BIG WORKER'); {SLEEP}")])
    _pod(kube, "other-head-y", namespace, {"ray.io/cluster": "other",
                                           "ray.io/node-type": "head"},
         [_container("ray-head", f"print('OTHER CLUSTER'); {SLEEP}")])
    for pod in ("demo-head-x1", "demo-small-worker-a", "demo-big-worker-b", "other-head-y"):
        wait_phase(kube, pod, namespace, {"Running"})

    def logs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RAYSCALE, "logs", "demo", "-n", namespace, "--kubeconfig",
                               str(dev_cluster.kubeconfig), *args], capture_output=True,
                              text=True, timeout=60, check=check)

    def complete() -> str | None:
        out = logs().stdout
        return out if all(x in out for x in ("BIG WORKER", "AUTOSCALER", "HEAD SAYS")) else None

    everything = wait_for(complete, 30, "every pod's first line")
    lines = everything.splitlines()
    assert "head                | HEAD SAYS" in lines, lines
    assert "autoscaler          | AUTOSCALER SAYS" in lines
    assert "demo-big-worker-b   | BIG WORKER" in lines
    assert any(x.startswith("demo-small-worker-a | tick ") for x in lines)
    assert "OTHER" not in everything

    assert logs("--node", "autoscaler").stdout == "AUTOSCALER SAYS\n"
    assert logs("--group", "big").stdout == "demo-big-worker-b | BIG WORKER\n"
    assert len(logs("--node", "demo-small-worker-a", "--tail", "1").stdout.splitlines()) == 1
    time.sleep(2)  # the head printed its line at start: not in the last second
    assert logs("--node", "head", "--since", "1s").stdout == ""
    assert logs("--node", "head", "--since", "1h").stdout == "HEAD SAYS\n"
    unknown = logs("--node", "nope", check=False)
    assert unknown.returncode == 1 and "demo-small-worker-a" in unknown.stderr

    follower = subprocess.Popen([*RAYSCALE, "logs", "demo", "-n", namespace, "--kubeconfig",
                                 str(dev_cluster.kubeconfig), "--group", "small", "-f",
                                 "--since", "1s"], stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        ticks = [int(follower.stdout.readline().rsplit(" ", 1)[1]) for _ in range(4)]
        assert ticks == list(range(ticks[0], ticks[0] + 4)), ticks  # new lines as they come
    finally:
        follower.terminate()
        follower.wait(timeout=10)
