"""The autoscaler sidecar while the Kubernetes API server times out: it holds.

The sidecar reaches the real API server through a relay that the test can
pause (tests/tcpproxy.py): requests then hang until the client's timeout, as
with an overloaded or partitioned API server. Meanwhile Ray's GCS answers and
says a worker is idle past its timeout and a placement group waits for a node.
Nothing may be stopped or launched on that picture; once the API server
answers again the demand is served with exactly the node it needs (not a
second one for the launch it could not make before), and the idle node goes.
"""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from ray.job_submission import JobStatus

from rayscale.devcluster.cluster import DevCluster
from tests.devtools import wait_for
from tests.k8s.operator.conftest import (
    RayCluster,
    _job_client,
    auth_headers,
    cluster_token,
    dashboard_url,
    manifest,
    pods,
    run_job,
)
from tests.tcpproxy import pausable_proxy

pytestmark = pytest.mark.e2e

NAME = "apiout"
HOLD_ACTOR = """
@ray.remote(num_cpus=1)
class Holder:
    def ping(self):
        return 1

h = Holder.options(name="holder", namespace="apiout", lifetime="detached").remote()
ray.get(h.ping.remote())
"""
KILL_ACTOR = 'ray.kill(ray.get_actor("holder", namespace="apiout"))\n'
GANG = """
from ray.util.placement_group import placement_group
pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=600)
print("GANG_PLACED")
"""


class Sampler:
    """What the RayCluster's worker group asked for, read straight from the API server."""

    def __init__(self, kube: Client, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.samples: list[tuple[float, int, tuple[str, ...]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                group = self.kube.get(RayCluster, NAME, namespace=self.ns)["spec"][
                    "workerGroupSpecs"][0]
                doomed = tuple((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
                self.samples.append((time.monotonic(), int(group.get("replicas") or 0), doomed))
            except Exception:
                pass
            self.stop.wait(0.5)

    def since(self, t: float) -> list[tuple[int, tuple[str, ...]]]:
        return [(r, d) for at, r, d in self.samples if at >= t]


def worker_names(kube: Client, ns: str) -> set[str]:
    return {p.metadata.name for p in pods(kube, ns, NAME, "worker")
            if p.metadata and p.metadata.name}


def test_nothing_is_stopped_or_launched_while_the_api_server_times_out(
    kube: Client, ns: str, operator: Any, vnode: Any, dev_cluster: DevCluster, tmp_path: Path
) -> None:
    server = urlparse(kube.config.cluster.server)  # type: ignore[attr-defined]
    assert server.hostname and server.port
    with pausable_proxy("127.0.0.1", server.hostname, server.port) as proxy:
        doc = manifest(NAME, replicas=0, autoscaling=True)
        options = doc["spec"]["autoscalerOptions"]
        options["idleTimeoutSeconds"] = 5
        # the operator under test gives the sidecar KUBECONFIG (--sidecar-kubeconfig);
        # autoscalerOptions.env comes after it (KubeRay appends): the relay is its API server
        config = yaml.safe_load(dev_cluster.kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = f"https://{proxy.host}:{proxy.port}"
        relayed = tmp_path / "relayed.kubeconfig"
        relayed.write_text(yaml.safe_dump(config))
        options["env"] = [{"name": "KUBECONFIG", "value": str(relayed)}]
        kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
        head = wait_for(lambda: next((p for p in pods(kube, ns, NAME, "head")
                                      if p.status and p.status.phase == "Running"
                                      and p.status.podIP), None), 120, "the head pod")
        assert head.status is not None and head.status.podIP and head.metadata is not None
        pod_ip = head.status.podIP
        sampler = Sampler(kube, ns)
        sampler.thread.start()
        try:
            run_job(kube, ns, NAME, pod_ip, HOLD_ACTOR)  # scales 0 -> 1 through the relay
            (worker,) = wait_for(lambda: worker_names(kube, ns), 60, "the worker pod")

            proxy.pause()
            paused_at = time.monotonic()
            run_job(kube, ns, NAME, pod_ip, KILL_ACTOR)  # the worker is idle from now on
            time.sleep(20)  # 4 idle timeouts
            job = _submit(kube, ns, pod_ip, GANG)  # demand for one more node
            time.sleep(15)
            held = sampler.since(paused_at)
            assert held and [s for s in held if s != (1, ())] == [], held
            assert worker_names(kube, ns) == {worker}
            proxy.resume()
            resumed_at = time.monotonic()

            client = job[0]
            wait_for(lambda: client.get_job_status(job[1]).is_terminal(), 300, "the gang job")
            assert client.get_job_status(job[1]) == JobStatus.SUCCEEDED, \
                client.get_job_logs(job[1])[-2000:]
            assert "GANG_PLACED" in client.get_job_logs(job[1])
            # scaled down once the gang's job ended: the idle nodes go
            wait_for(lambda: not worker_names(kube, ns), 180, "the workers to scale down")
        finally:
            sampler.stop.set()
            sampler.thread.join(timeout=5)
        after = sampler.since(resumed_at)
        # one node launched for the gang's second bundle, never a second one for it
        assert max(r for r, _ in after) == 2, after
        log = _sidecar_log(vnode.state_dir, ns, head)
        assert "provider_unreachable" in log and "provider_back" in log


def _submit(kube: Client, ns: str, pod_ip: str, code: str) -> tuple[Any, str]:
    url = dashboard_url(kube, ns, NAME, pod_ip)
    client: Any = wait_for(lambda: _job_client(url, auth_headers(cluster_token(kube, ns, NAME))),
                           60, "the job API")
    body = "import ray\nray.init()\n" + code
    return client, client.submit_job(entrypoint=shlex.join(["python", "-c", body]))


def _sidecar_log(state_dir: Path, ns: str, head: Pod) -> str:
    assert head.metadata is not None
    path = state_dir / "pods" / f"{ns}_{head.metadata.name}_{head.metadata.uid}" / "autoscaler.log"
    return path.read_text(errors="replace")
