"""The seeds' Kubernetes walkthroughs, their commands as written (names substituted).

Seed 003 (Ray's "KubeRay autoscaling" guide): apply the autoscaler sample
(head with 1 CPU, at least 1 worker of 1 CPU), then through `kubectl exec`
into the head ask for 4 CPUs with `request_resources` (3 workers), read
`ray status` the same way, and the autoscaler's decision in `kubectl logs
$HEAD_POD -c autoscaler | tail -n 20`. Seed 001 (ACK's guide) on the same
cluster: `kubectl exec -it ... -- bash` then `ray status`, and `kubectl
port-forward svc/<cluster>-head-svc 8265:8265` to the dashboard, through
which a Ray job is submitted with `ray job submit` and runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client

from rayscale.devcluster import DevCluster
from tests.devtools import wait_for
from tests.k8s.operator.conftest import (
    ROOT,
    RayCluster,
    cluster_token,
    pods,
    ray_env,
    running,
    without_shutdown_drain,
)

pytestmark = pytest.mark.e2e

NAME = "raycluster-autoscaler"


def seed_003_sample() -> dict[str, Any]:
    """examples/kuberay-autoscaler.yaml (docs/dev-cluster.md applies it): KubeRay's
    ray-cluster.autoscaler.yaml as the seed uses it, a head with 1 CPU and a worker
    group of 1-CPU workers, at least 1."""
    doc = yaml.safe_load((ROOT / "examples" / "kuberay-autoscaler.yaml").read_text())
    assert doc["metadata"]["name"] == NAME
    without_shutdown_drain(doc["spec"])
    return dict(doc)


def test_seed_003_and_001_walkthroughs(kube: Client, ns: str, operator: Any,
                                       k8s_bin_dir: Path, dev_cluster: DevCluster) -> None:
    if not (k8s_bin_dir / "kubectl").exists():
        pytest.skip("kubectl not built (bash scripts/build-k8s.sh)")
    env = {**os.environ, "KUBECONFIG": str(dev_cluster.kubeconfig),
           "PATH": f"{k8s_bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def sh(command: str, timeout: float = 120) -> str:
        """One line of the walkthrough, run by a shell as the user would type it."""
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    kube.create(RayCluster.from_dict(seed_003_sample()), namespace=ns)  # type: ignore[arg-type]
    wait_for(lambda: (running(kube, ns, NAME, "head"), running(kube, ns, NAME, "worker"))
             == (1, 1), 180, "the head and its minimum worker")
    wait_for(lambda: (kube.get(RayCluster, NAME, namespace=ns).get("status") or {}).get("state")
             == "ready", 180, "the RayCluster ready")

    # seed 003, as written (plus -n for the test's namespace)
    head_pod = sh(f"kubectl get pods -n {ns} --selector=ray.io/node-type=head "
                  "-o custom-columns=POD:metadata.name --no-headers").strip()
    assert head_pod == pods(kube, ns, NAME, "head")[0].metadata.name  # type: ignore[union-attr]
    env["HEAD_POD"] = head_pod
    sh(f'kubectl exec -n {ns} $HEAD_POD -it -c ray-head -- python -c "import ray; ray.init(); '
       'ray.autoscaler.sdk.request_resources(num_cpus=4)"')
    wait_for(lambda: running(kube, ns, NAME, "worker") == 3, 180,
             "3 workers (4 CPUs with the head's)")
    listed = sh(f"kubectl get pod -n {ns} --selector=ray.io/cluster={NAME}")
    assert len(re.findall(r"\bRunning\b", listed)) == 4, listed

    def three_workers_in_ray_status() -> str | None:
        out = sh(f"kubectl exec -n {ns} $HEAD_POD -it -c ray-head -- ray status")
        return out if re.search(r"\b3 small-group\b", out) else None

    status = wait_for(three_workers_in_ray_status, 120, "ray status listing 3 workers")
    assert "4.0 CPU" in status or "/4.0 CPU" in status, status
    log = sh(f"kubectl logs -n {ns} $HEAD_POD -c autoscaler | tail -n 20")
    # the decision and its reason: `floor` is a request_resources constraint (the seed's
    # log shows Ray's autoscaler's "Adding 2 node(s) of type small-group")
    launches = [line for line in log.splitlines() if " launch launched " in line]
    assert any(re.search(r"launched 2 x small-group .* for floor", line) for line in launches), log

    # seed 001: a shell in the head, then ray status
    inside = subprocess.run(
        ["kubectl", "exec", "-i", "-n", ns, head_pod, "-c", "ray-head", "--", "bash"],
        input="ray status\nexit\n", env=env, capture_output=True, text=True, timeout=120,
        check=False).stdout
    assert "Node status" in inside and "small-group" in inside, inside

    # seed 001: the dashboard through a port-forward to the head Service, a job through it
    forward = subprocess.Popen(["kubectl", "port-forward", "-n", ns, f"svc/{NAME}-head-svc",
                                "8265:8265"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        assert "Forwarding from 127.0.0.1:8265" in line, line
        job_env = {**{k: v for k, v in env.items() if not k.startswith("RAY_AUTH")},
                   **ray_env(cluster_token(kube, ns, NAME))}
        ray_cli = str(Path(sys.executable).with_name("ray")) if shutil.which("ray") is None \
            else "ray"
        started = time.monotonic()
        submitted = None
        while time.monotonic() - started < 120:
            submitted = subprocess.run(
                [ray_cli, "job", "submit", "--address", "http://127.0.0.1:8265", "--",
                 "python", "-c", "import ray; ray.init(); "
                 "print('tasks:', ray.get([ray.remote(lambda: 1).remote() for _ in range(4)]))"],
                env=job_env, capture_output=True, text=True, timeout=300, check=False)
            if submitted.returncode == 0:
                break
            time.sleep(2)
        assert submitted is not None and submitted.returncode == 0, \
            submitted.stdout + submitted.stderr if submitted else ""
        assert "tasks: [1, 1, 1, 1]" in submitted.stdout, submitted.stdout
        assert re.search(r"Job '\S+' succeeded", submitted.stdout), submitted.stdout
    finally:
        forward.terminate()
        try:
            forward.wait(10)
        except subprocess.TimeoutExpired:
            forward.kill()
            forward.wait()
