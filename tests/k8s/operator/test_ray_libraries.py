"""Ray's libraries on Kubernetes: a Ray Data pipeline scales a RayCluster through the sidecar.

Ray Data sizes itself by the cluster config the autoscaler reports to the GCS
(observe/gcs_report.py); the head's rayscale sidecar reports it as the local
autoscaler does, and turns Ray Data's requests into worker pods.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, manifest, pods, run_job

pytestmark = pytest.mark.e2e

PIPELINE = """
    import time
    import ray._private.state as state
    # the sidecar reports the config in its first round, which may come after
    # the head pod is Running (the job is submitted as soon as the job API answers)
    deadline = time.monotonic() + 60
    while (config := state.state.get_cluster_config()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    print("GROUPS", config and sorted((g.name, g.max_count) for g in config.node_group_configs))
    def double(batch):
        time.sleep(1.0)
        batch["id"] = batch["id"] * 2
        return batch
    ds = ray.data.range(600, override_num_blocks=60)
    print("SUM", ds.map_batches(double, num_cpus=1, batch_size=None).sum("id"))
"""


def test_ray_data_scales_workers_from_zero_through_the_sidecar(
    kube: Client, ns: str, operator: Any
) -> None:
    pytest.importorskip("pandas", reason="ray[data] (rayscale[data]) is not installed")
    doc = manifest("kdata", replicas=0, autoscaling=True)
    doc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] = 6
    doc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 3
    kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
    head = wait_for(lambda: next((p for p in pods(kube, ns, "kdata", "head")
                                  if p.status and p.status.phase == "Running"
                                  and p.status.podIP), None), 120, "head pod")
    assert head.status is not None and head.status.podIP
    assert pods(kube, ns, "kdata", "worker") == []

    peak, stop = [0], threading.Event()

    def follow() -> None:
        while not stop.is_set():
            live: list[Pod] = pods(kube, ns, "kdata", "worker")
            peak[0] = max(peak[0], len(live))
            time.sleep(0.5)

    watcher = threading.Thread(target=follow)
    watcher.start()
    try:
        out = run_job(kube, ns, "kdata", head.status.podIP, PIPELINE, timeout_s=420)
    finally:
        stop.set()
        watcher.join()
    assert "GROUPS [('headgroup', 1), ('small-group', 3)]" in out, out[-3000:]
    assert f"SUM {2 * sum(range(600))}" in out
    assert peak[0] == 3, f"Ray Data asked for and got maxReplicas (peak {peak[0]})"
    wait_for(lambda: not pods(kube, ns, "kdata", "worker"), 180,
             "workers back to 0 after the idle timeout")
    cr = kube.get(RayCluster, "kdata", namespace=ns)
    assert cr["spec"]["workerGroupSpecs"][0].get("replicas", 0) == 0
