"""Small builders and waits shared by the k8s tests."""

from __future__ import annotations

import sys
from typing import Any, cast

from lightkube import Client
from lightkube.resources.core_v1 import Event, Pod

from tests.devtools import VNodeProcess, wait_for

PY = sys.executable


def pod_body(
    name: str,
    namespace: str,
    command: list[str],
    *,
    cpu: str = "100m",
    memory: str = "64Mi",
    env: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    restart_policy: str = "Never",
    tolerate_elastic: bool = False,
    node_selector: dict[str, str] | None = None,
    grace_s: int = 5,
    extra_spec: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
) -> Pod:
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": grace_s,
        "containers": [{
            "name": "main",
            "image": "busybox:ignored",
            "command": command,
            "env": env or [],
            "resources": {"requests": {"cpu": cpu, "memory": memory},
                          "limits": {"cpu": cpu, "memory": memory}},
            **(container or {}),
        }],
    }
    if tolerate_elastic:
        spec["tolerations"] = [{"key": "virtual-kubelet.io/provider", "operator": "Equal",
                                "value": "rayscale", "effect": "NoSchedule"}]
    if node_selector:
        spec["nodeSelector"] = node_selector
    spec.update(extra_spec or {})
    return cast(Pod, Pod.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }))


def wait_phase(kube: Client, name: str, namespace: str, phases: set[str],
               timeout_s: float = 60) -> Pod:
    def check() -> Pod | None:
        pod = kube.get(Pod, name, namespace=namespace)
        return pod if pod.status is not None and pod.status.phase in phases else None

    return wait_for(check, timeout_s, f"pod {namespace}/{name} in {sorted(phases)}")


def main_pid(pod: Pod) -> int:
    assert pod.status is not None and pod.status.containerStatuses
    cid = pod.status.containerStatuses[0].containerID or ""
    assert cid.startswith("rayscale://"), cid
    return int(cid.removeprefix("rayscale://"))


def pod_log(vnode: VNodeProcess, pod: Pod, container: str = "main") -> str:
    assert pod.metadata is not None
    m = pod.metadata
    path = vnode.state_dir / "pods" / f"{m.namespace}_{m.name}_{m.uid}" / f"{container}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def events_for(kube: Client, namespace: str, name: str) -> list[Event]:
    return [e for e in kube.list(Event, namespace=namespace)
            if e.involvedObject.name == name]
