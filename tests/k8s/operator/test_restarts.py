"""Killing the operator, or the autoscaler sidecar, mid scale-up converges without duplicates."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from lightkube import Client

from rayscale import procs
from tests.devtools import wait_for
from tests.k8s.operator.conftest import (
    OperatorProcess,
    RayCluster,
    manifest,
    pods,
    run_job,
    running,
)


def _set_replicas(kube: Client, ns: str, name: str, replicas: int) -> None:
    from lightkube.types import PatchType

    obj = kube.get(RayCluster, name, namespace=ns)
    groups = obj["spec"]["workerGroupSpecs"]
    groups[0]["replicas"] = replicas
    kube.patch(RayCluster, name, {"spec": {"workerGroupSpecs": groups}}, namespace=ns,
               patch_type=PatchType.MERGE)


def test_operator_killed_mid_scale_up_converges_without_duplicates(
    kube: Client, ns: str, operator: OperatorProcess
) -> None:
    kube.create(RayCluster.from_dict(manifest("opcrash", replicas=0)),  # type: ignore[arg-type]
                namespace=ns)
    wait_for(lambda: running(kube, ns, "opcrash", "head") == 1, 120, "head pod")
    operator.kill()
    _set_replicas(kube, ns, "opcrash", 3)  # the change arrives while no operator runs
    time.sleep(2)
    assert pods(kube, ns, "opcrash", "worker") == []
    operator.start()
    wait_for(lambda: running(kube, ns, "opcrash", "worker") == 3, 180, "three workers")
    operator.kill()  # again, right after it acted
    operator.start()
    time.sleep(6)  # several reconciles of the restarted operator
    assert len(pods(kube, ns, "opcrash", "worker")) == 3, "no duplicate pods"
    assert len(pods(kube, ns, "opcrash", "head")) == 1


def _sidecar_pid(name: str, ns: str) -> int | None:
    wanted = ["autoscaler", "--cluster", name, "--namespace", ns]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = procs.cmdline(int(entry.name))
            runs = any(argv[i:i + len(wanted)] == wanted for i in range(len(argv)))
            if runs and procs.is_alive(int(entry.name)):
                return int(entry.name)
    return None


def test_autoscaler_killed_mid_scale_up_converges_without_duplicates(
    kube: Client, ns: str, operator: OperatorProcess
) -> None:
    kube.create(RayCluster.from_dict(manifest("ascrash", replicas=0, autoscaling=True)),  # type: ignore[arg-type]
                namespace=ns)
    head = wait_for(lambda: next((p for p in pods(kube, ns, "ascrash", "head")
                                  if p.status and p.status.phase == "Running"), None), 120,
                    "head pod")
    assert head.status is not None
    first = wait_for(lambda: _sidecar_pid("ascrash", ns), 60, "the autoscaler sidecar")
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(pods(kube, ns, "ascrash", "worker")))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result: list[str] = []
    job = threading.Thread(target=lambda: result.append(run_job(kube, ns, "ascrash",
                                                                head.status.podIP, """
        import time
        @ray.remote(num_cpus=1)
        def work():
            time.sleep(10)
        ray.get([work.remote() for _ in range(3)], timeout=600)
        print("DONE")
    """)))
    job.start()
    try:
        wait_for(lambda: pods(kube, ns, "ascrash", "worker"), 120, "the first launch")
        os.kill(first, signal.SIGKILL)
        # the head pod's restart policy brings the sidecar back; it adopts what exists
        wait_for(lambda: (pid := _sidecar_pid("ascrash", ns)) and pid != first, 90,
                 "the autoscaler restarted")
        job.join(timeout=600)
        assert result and "DONE" in result[0], "the job finished"
    finally:
        stop.set()
        watcher.join()
    assert peak[0] == 3, f"exactly the three workers the demand needs, no duplicates: {peak}"
