"""The operator's Ray pods carry KubeRay's probes, and its status follows pod readiness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.resources.core_v1 import Pod

from tests.devtools import VNodeProcess, wait_for
from tests.k8s.operator.conftest import RayCluster, manifest, pods


def _status(kube: Client, ns: str, name: str) -> dict[str, Any]:
    return dict(kube.get(RayCluster, name, namespace=ns).get("status") or {})


def _home(vnode: VNodeProcess, pod: Pod) -> Path:
    assert pod.metadata is not None
    m = pod.metadata
    return vnode.state_dir / "pods" / f"{m.namespace}_{m.name}_{m.uid}" / "home"


def _ready(pod: Pod) -> bool:
    conds = (pod.status.conditions or []) if pod.status is not None else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def test_worker_counts_as_ready_only_when_its_probe_passes(
        kube: Client, ns: str, operator: Any, vnode: VNodeProcess) -> None:
    doc = manifest("probed", replicas=1)
    worker = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    # the user's readiness probe (kept; KubeRay's liveness probe is still added)
    worker["readinessProbe"] = {"exec": {"command": ["sh", "-c", 'test -e "$HOME/ok"']},
                                "periodSeconds": 1, "failureThreshold": 1}
    kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]

    # the head's injected probe asks Ray's dashboard agent: Ready means Ray answers
    head = wait_for(lambda: [p for p in pods(kube, ns, "probed", "head") if _ready(p)], 180,
                    "head pod Ready (its Ray health endpoint answered)")[0]
    assert head.spec is not None
    ray = head.spec.containers[0]
    assert ray.readinessProbe is not None and ray.readinessProbe.httpGet is not None
    assert ray.readinessProbe.httpGet.path == "/api/healthz"
    port = ray.readinessProbe.httpGet.port
    assert f"--dashboard-agent-listen-port={port}" in (ray.command or [])

    wait_for(lambda: _status(kube, ns, "probed").get("availableWorkerReplicas") == 1, 120,
             "the worker pod running")
    [w] = pods(kube, ns, "probed", "worker")
    assert w.spec is not None and w.spec.containers[0].livenessProbe is not None
    assert w.spec.containers[0].livenessProbe.httpGet is not None
    wait_for(lambda: {c["type"]: c["status"] for c in _status(kube, ns, "probed").get(
        "conditions") or []}.get("HeadPodReady") == "True", 60, "HeadPodReady")
    status = _status(kube, ns, "probed")
    assert status["readyWorkerReplicas"] == 0 and status.get("state") != "ready"
    assert not _ready(kube.get(Pod, w.metadata.name if w.metadata else "", namespace=ns))

    (_home(vnode, w) / "ok").touch()
    status = wait_for(lambda: (s := _status(kube, ns, "probed")).get("state") == "ready" and s,
                      120, "state ready once the worker's probe passes")
    assert status["readyWorkerReplicas"] == 1 and status["availableWorkerReplicas"] == 1
