"""Operator fixtures: the CRDs installed, the operator running, namespaces cleaned."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Pod, Secret

from rayscale import procs
from rayscale.cli.crd_cmd import DEPLOYED_KINDS, file_name
from rayscale.devcluster import DevCluster
from rayscale.operator.auth import TOKEN_KEY
from rayscale.ports import free_port
from tests.devtools import wait_for

ROOT = Path(__file__).parent.parent.parent.parent
CRDS = ROOT / "deploy" / "crds"
CRD = CRDS / "ray.io_rayclusters.yaml"
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")


@pytest.fixture(scope="session")
def crd(kube: Client) -> None:
    """The CRDs a user installs, from their files in deploy/crds (RayCluster, RayJob,
    RayCronJob: DEPLOYED_KINDS), applied server-side (a stale one is brought up to
    date), each Established before a test uses it."""
    docs = [yaml.safe_load((CRDS / file_name(kind)).read_text()) for kind in DEPLOYED_KINDS]
    for doc in docs:
        kube.apply(codecs.from_dict(doc), field_manager="rayscale-test", force=True)
    for doc in docs:
        name = doc["metadata"]["name"]
        wait_for(lambda n=name: _established(kube, n), 30, f"the CRD {name} to be established")
        # a new or changed CRD's storage answers 429 "storage is (re)initializing" for
        # a moment after Established: wait until its objects can be listed
        names = doc["spec"]["names"]
        res = create_namespaced_resource(doc["spec"]["group"], "v1", names["kind"],
                                         names["plural"])
        wait_for(lambda r=res: _listable(kube, r), 30, f"the CRD {name}'s storage")


def _listable(kube: Client, res: Any) -> bool:
    try:
        list(kube.list(res, namespace="*"))
        return True
    except ApiError as exc:
        if exc.status.code == 429:
            return False
        raise


def _established(kube: Client, name: str = "rayclusters.ray.io") -> bool:
    crd = kube.get(CustomResourceDefinition, name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


class OperatorProcess:
    """The operator under test, as a process the tests may kill and start again."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.history = log.parent / "history.sqlite3"  # the clusters' history it keeps

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        env = {**os.environ, procs.MARKER: "rayscale-test-operator"}
        self.proc = procs.spawn(
            [sys.executable, "-m", "rayscale.cli.main", "operator",
             "--kubeconfig", str(self.kubeconfig), "--shared-pod-network",
             "--sidecar-kubeconfig", str(self.kubeconfig),
             "--metrics-port", str(self.metrics_port), "--history", str(self.history)],
            env, self.log,
        )

    def kill(self) -> None:
        """SIGKILL, the way a crash or an OOM kill ends it."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            procs.stop_group(self.proc.pid, grace_s=10)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def operator(dev_cluster: DevCluster, crd: None, vnode: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    handle = OperatorProcess(dev_cluster.kubeconfig,
                             tmp_path_factory.mktemp("operator") / "operator.log")
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def ns(kube: Client, namespace: str) -> Iterator[str]:
    """A test namespace whose RayClusters are deleted (and their pods collected) first."""
    yield namespace
    for obj in kube.list(RayCluster, namespace=namespace):
        kube.delete(RayCluster, obj["metadata"]["name"], namespace=namespace)
    wait_for(lambda: not list(kube.list(Pod, namespace=namespace,
                                        labels={"ray.io/is-ray-node": "yes"})), 90,
             "Ray pods collected after their RayClusters were deleted")


#: Ray 2.60's ``ray start --block`` drains its node for up to this long on SIGTERM (for
#: Serve upgrades); a head never finishes draining, so every deleted head pod took the
#: whole 30 s. Test manifests turn it off (a user's choice in the pod template; KubeRay's
#: vendored samples keep Ray's default).
NO_DRAIN = {"name": "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "value": "0"}


def without_shutdown_drain(cluster_spec: dict[str, Any]) -> dict[str, Any]:
    """``cluster_spec`` (a RayCluster's spec) with NO_DRAIN in every Ray container."""
    templates = [cluster_spec["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster_spec.get("workerGroupSpecs") or []]
    for template in templates:
        container = template["spec"]["containers"][0]
        container["env"] = [*(container.get("env") or []), NO_DRAIN]
    return cluster_spec


def manifest(name: str, replicas: int = 1, autoscaling: bool = False) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "seeds-autoscaler.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["enableInTreeAutoscaling"] = autoscaling
    group = doc["spec"]["workerGroupSpecs"][0]
    group["replicas"] = replicas
    without_shutdown_drain(doc["spec"])
    return dict(doc)


def pods(kube: Client, ns: str, name: str, node_type: str) -> list[Pod]:
    return [p for p in kube.list(Pod, namespace=ns,
                                 labels={"ray.io/cluster": name, "ray.io/node-type": node_type})
            if p.metadata and not p.metadata.deletionTimestamp]


def running(kube: Client, ns: str, name: str, node_type: str) -> int:
    return sum(1 for p in pods(kube, ns, name, node_type)
               if p.status is not None and p.status.phase == "Running")


def gcs_address(kube: Client, ns: str, name: str, pod_ip: str) -> str:
    """The head's GCS address; the port is per cluster on the shared dev network."""
    def port() -> str | None:
        status = kube.get(RayCluster, name, namespace=ns).get("status") or {}
        return (status.get("endpoints") or {}).get("gcs-server")

    return f"{pod_ip}:{wait_for(port, 60, 'the gcs-server endpoint in status')}"


def cluster_token(kube: Client, ns: str, name: str) -> str | None:
    """The Ray auth token of a RayCluster with ``authOptions.mode: token``, read from its
    Secret through the API server as a user would (``kubectl get secret``); None when
    the cluster has no shared token (auth off, or Kubernetes tokens)."""
    obj = kube.get(RayCluster, name, namespace=ns)
    options = obj["spec"].get("authOptions") or {}
    if options.get("mode") != "token" or options.get("enableK8sTokenAuth"):
        return None
    secret_name = options.get("secretName") or name

    def data() -> dict[str, str] | None:
        try:
            return kube.get(Secret, secret_name, namespace=ns).data
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    found = wait_for(data, 60, f"the token Secret {ns}/{secret_name}")
    return base64.b64decode(found[TOKEN_KEY]).decode()


def auth_headers(token: str | None) -> dict[str, str]:
    """The token for Ray's dashboard, as ``Authorization``: Ray's JobSubmissionClient
    adds its own process-wide token under that name unless the caller set it (and the
    dashboard reads ``Authorization`` before ``x-ray-authorization``)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def ray_env(token: str | None) -> dict[str, str]:
    """A Ray client process's auth settings for a cluster (a driver, `ray job submit`).

    Ray's gRPC clients read these once per process, so clients of token clusters run
    in processes of their own, never in the test process.
    """
    if token is None:
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def alive_ray_nodes(gcs: str, token: str | None) -> dict[str, str]:
    """Live Ray nodes as the cluster's GCS lists them (node id -> node IP), asked by a
    client process with the token ({} while the GCS does not answer)."""
    code = (
        "import json, sys\n"
        "from ray._raylet import GcsClient\n"
        "from ray.autoscaler.v2.sdk import get_cluster_resource_state\n"
        "state = get_cluster_resource_state(GcsClient(address=sys.argv[1]))\n"
        "print(json.dumps({n.node_id.hex(): n.node_ip_address for n in state.node_states\n"
        "                  if n.status != 2}))\n"  # 2: DEAD
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")},
           **ray_env(token)}
    out = subprocess.run([sys.executable, "-c", code, gcs], env=env, capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    nodes: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return nodes


def ray_node_count(gcs: str, token: str | None) -> int:
    """How many live Ray nodes the cluster's GCS lists (0 while it does not answer)."""
    return len(alive_ray_nodes(gcs, token))


def dashboard_url(kube: Client, ns: str, name: str, pod_ip: str) -> str:
    def port() -> str | None:
        status = kube.get(RayCluster, name, namespace=ns).get("status") or {}
        return (status.get("endpoints") or {}).get("dashboard")

    return f"http://{pod_ip}:{wait_for(port, 60, 'the dashboard endpoint in status')}"


def run_job(kube: Client, ns: str, name: str, pod_ip: str, code: str,
            timeout_s: float = 600) -> str:
    """Run ``code`` as a Ray job on the cluster's head (its driver runs inside the head
    pod, as KubeRay users submit work); return its logs, failing if it did not succeed.
    With token auth, the job API is called with the cluster's token (from its Secret)."""
    import shlex
    import textwrap
    import time

    from ray.job_submission import JobStatus

    url = dashboard_url(kube, ns, name, pod_ip)
    headers = auth_headers(cluster_token(kube, ns, name))
    client = wait_for(lambda: _job_client(url, headers), 120, "the head's job API")
    body = "import ray\nray.init()\n" + textwrap.dedent(code)
    job = client.submit_job(entrypoint=shlex.join(["python", "-c", body]))
    deadline = time.monotonic() + timeout_s
    while not client.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline, f"job {job} still running after {timeout_s}s"
        time.sleep(1)
    logs: str = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def _job_client(url: str, headers: dict[str, str]) -> object | None:
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(url, headers=headers)
        client.list_jobs()
        return client
    except Exception:
        return None
