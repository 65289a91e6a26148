"""The autoscaler sidecar takes ``autoscalerOptions`` overrides as KubeRay's
mergeAutoscalerOverrides does (ray-operator/controllers/ray/common/pod.go)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rayscale.operator.desired import PodSettings, head_pod
from rayscale.operator.handlers import SidecarSettings, _add_autoscaler_sidecar
from rayscale.spec import parse_cluster_spec

EXAMPLE = Path(__file__).parent.parent / "examples" / "seeds-autoscaler.yaml"


def sidecar(options: dict[str, Any]) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["namespace"] = "ns1"
    doc["spec"]["autoscalerOptions"] = options
    spec = parse_cluster_spec(doc)
    pod = head_pod(spec, PodSettings(shared_network=True))
    _add_autoscaler_sidecar(pod, spec, SidecarSettings(), 6379)
    container: dict[str, Any] = pod["spec"]["containers"][-1]
    assert container["name"] == "autoscaler"
    return container


def test_without_overrides_the_sidecar_is_ours() -> None:
    plain = sidecar({})
    assert "autoscaler" in plain["command"]
    assert plain["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    assert "securityContext" not in plain and "envFrom" not in plain


def test_overrides_replace_or_append_as_kuberay_does() -> None:
    ours = sidecar({})
    resources = {"limits": {"cpu": "500m", "memory": "512Mi"},
                 "requests": {"cpu": "500m", "memory": "512Mi"}}
    merged = sidecar({
        "resources": resources, "image": "example.com/autoscaler:1",
        "imagePullPolicy": "IfNotPresent", "securityContext": {"runAsNonRoot": True},
        "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "7443"}],
        "envFrom": [{"configMapRef": {"name": "extra"}}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
    })
    assert merged["resources"] == resources
    assert merged["image"] == "example.com/autoscaler:1"
    assert merged["imagePullPolicy"] == "IfNotPresent"
    assert merged["securityContext"] == {"runAsNonRoot": True}
    # appended after ours: the user's entry comes last, so it wins
    assert merged["env"][:-1] == ours["env"]
    assert merged["env"][-1] == {"name": "KUBERNETES_SERVICE_PORT", "value": "7443"}
    assert merged["envFrom"] == [{"configMapRef": {"name": "extra"}}]
    assert merged["volumeMounts"][-1] == {"name": "cfg", "mountPath": "/etc/cfg"}
    assert merged["command"] == ours["command"]


def test_command_and_args_replace_ours() -> None:
    merged = sidecar({"command": ["ray", "kuberay-autoscaler"], "args": ["--cluster-name", "x"]})
    assert merged["command"] == ["ray", "kuberay-autoscaler"]
    assert merged["args"] == ["--cluster-name", "x"]
