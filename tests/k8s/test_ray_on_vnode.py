"""A Ray cluster from KubeRay-style pods: head + worker joined through a headless Service name."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any, cast

from lightkube import Client
from lightkube.resources.core_v1 import Pod, Service

from rayscale.devcluster import DevCluster
from rayscale.ports import free_port
from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import pod_body, pod_log, wait_phase

RAY_ENV: list[dict[str, Any]] = [
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "RAY_AUTH_MODE", "value": "disabled"},
    {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
    {"name": "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "value": "0"},
]
LIGHT = ["--temp-dir=/tmp/ray", "--dashboard-agent-listen-port=0",
         "--object-store-memory=100000000"]
RAY_CONTAINER: dict[str, Any] = {
    "image": "rayproject/ray:2.60.0",  # ignored by the vnode
    "volumeMounts": [{"name": "ray-logs", "mountPath": "/tmp/ray"}],
}
RAY_VOLUMES = {"volumes": [{"name": "ray-logs", "emptyDir": {}}]}


def gcs_port() -> int:
    """6379 as in KubeRay, unless something else on this machine has it (GCS binds *:port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", 6379))
        except OSError:
            return free_port()
    return 6379


def alive_ray_nodes(address: str) -> int:
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state
    from ray.core.generated import autoscaler_pb2

    state = get_cluster_resource_state(GcsClient(address=address))
    return sum(1 for n in state.node_states
               if autoscaler_pb2.NodeStatus.Name(n.status) != "DEAD")


def test_head_and_worker_form_one_ray_cluster(kube: Client, vnode: VNodeProcess,
                                              namespace: str, k8s_bin_dir: Path,
                                              dev_cluster: DevCluster) -> None:
    port = gcs_port()
    kube.create(cast(Service, Service.from_dict({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "raycluster-head-svc", "namespace": namespace},
        "spec": {"clusterIP": "None", "selector": {"ray.io/node-type": "head"},
                 "publishNotReadyAddresses": True,
                 "ports": [{"name": "gcs", "port": port}]},
    })))
    head = pod_body(
        "raycluster-head", namespace, ["ray"], cpu="1", memory="2Gi",
        labels={"ray.io/node-type": "head"}, restart_policy="Always", grace_s=10,
        env=RAY_ENV, extra_spec=RAY_VOLUMES,
        container={**RAY_CONTAINER, "args": [
            "start", "--head", "--block", "--node-ip-address=$(POD_IP)", f"--port={port}",
            "--num-cpus=0", f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false", *LIGHT]},
    )
    worker = pod_body(
        "raycluster-worker-0", namespace, ["ray"], cpu="1", memory="2Gi",
        labels={"ray.io/node-type": "worker"}, restart_policy="Always", grace_s=10,
        env=RAY_ENV, extra_spec=RAY_VOLUMES,
        container={**RAY_CONTAINER, "args": [
            "start", f"--address=raycluster-head-svc.{namespace}.svc.cluster.local:{port}",
            "--block", "--node-ip-address=$(POD_IP)", "--num-cpus=1", *LIGHT]},
    )
    kube.create(head)
    kube.create(worker)
    head_pod = wait_phase(kube, "raycluster-head", namespace, {"Running"}, timeout_s=90)
    wait_phase(kube, "raycluster-worker-0", namespace, {"Running"}, timeout_s=90)
    assert head_pod.status is not None and head_pod.status.podIP
    address = f"{head_pod.status.podIP}:{port}"

    def two_nodes() -> bool:
        try:
            return alive_ray_nodes(address) == 2
        except Exception:
            return False

    try:
        wait_for(two_nodes, 120, "2 alive Ray nodes", interval_s=1.0)
    except TimeoutError:
        w = kube.get(Pod, "raycluster-worker-0", namespace=namespace)
        raise AssertionError("head log:\n" + pod_log(vnode, head_pod)[-3000:]
                             + "\nworker log:\n" + pod_log(vnode, w)[-3000:]) from None

    # as the users' docs do: `kubectl exec` into the head finds its cluster (the head's
    # /tmp/ray mount and environment), and `kubectl logs` shows ray start's output
    kubectl = [str(k8s_bin_dir / "kubectl"), f"--kubeconfig={dev_cluster.kubeconfig}",
               "-n", namespace]
    if (k8s_bin_dir / "kubectl").exists():
        status = subprocess.run([*kubectl, "exec", "raycluster-head", "-c", "main", "--",
                                 "ray", "status"], capture_output=True, text=True, timeout=120,
                                check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "Node status" in status.stdout, status.stdout
        logs = subprocess.run([*kubectl, "logs", "raycluster-head"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert "Ray runtime started" in logs.stdout, logs.stdout[-2000:] + logs.stderr
        drv = subprocess.run([*kubectl, "exec", "raycluster-head", "-c", "main", "--",
                              "python", "-c", "import ray; ray.init(); "
                              "print('CPUS', ray.cluster_resources().get('CPU'))"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert drv.returncode == 0 and "CPUS 1.0" in drv.stdout, drv.stdout + drv.stderr
