"""KubeRay's default probes on the operator's Ray containers, and status that follows them."""

from __future__ import annotations

from typing import Any

import pytest

from rayscale.operator.desired import PodSettings, head_pod, worker_pod
from rayscale.operator.reconcile import ObservedPod, conditions, head_ready, reconcile
from tests.test_operator_reconcile import spec

SHARED = PodSettings(shared_network=True)


def _ray(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def _agent_port(argv: list[str]) -> int:
    [value] = [a.split("=", 1)[1] for a in argv if a.startswith("--dashboard-agent-listen-port=")]
    return int(value)


def test_ray_containers_get_kuberays_http_probes_on_their_own_agent_port() -> None:
    s = spec()
    for pod, timeout in ((head_pod(s, SHARED), 5), (worker_pod(s, s.worker_groups[0], SHARED), 2)):
        ray = _ray(pod)
        port = _agent_port(ray["command"])
        assert port > 0  # not 0: the probe must know where the agent listens
        ready, live = ray["readinessProbe"], ray["livenessProbe"]
        assert ready["httpGet"] == {"path": "/api/healthz", "port": port}
        assert (ready["initialDelaySeconds"], ready["periodSeconds"], ready["timeoutSeconds"],
                ready["failureThreshold"]) == (10, 5, timeout, 10)
        assert live["httpGet"] == ready["httpGet"]
        assert (live["initialDelaySeconds"], live["failureThreshold"]) == (30, 120)
    a = _agent_port(_ray(worker_pod(s, s.worker_groups[0], SHARED))["command"])
    b = _agent_port(_ray(worker_pod(s, s.worker_groups[0], SHARED))["command"])
    assert a != b  # pods on one machine: each agent has its own port


def test_plain_network_uses_rays_default_agent_port() -> None:
    s = spec()
    ray = _ray(worker_pod(s, s.worker_groups[0], PodSettings()))
    assert ray["readinessProbe"]["httpGet"]["port"] == 52365
    assert not any(a.startswith("--dashboard-agent-listen-port") for a in ray["command"])


def test_users_probes_and_agent_port_win_and_injection_can_be_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    own = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    s = spec(template={"spec": {"containers": [{"name": "ray", "image": "rayproject/ray",
                                                "readinessProbe": own}]}},
             rayStartParams={"dashboard-agent-listen-port": "41234", "num-cpus": "1"})
    ray = _ray(worker_pod(s, s.worker_groups[0], SHARED))
    assert ray["readinessProbe"] == own  # the user's, untouched
    assert ray["livenessProbe"]["httpGet"]["port"] == 41234  # the missing one is added
    assert _agent_port(ray["command"]) == 41234
    monkeypatch.setenv("ENABLE_PROBES_INJECTION", "false")
    ray = _ray(worker_pod(s, s.worker_groups[0], SHARED))
    assert "livenessProbe" not in ray


def test_status_counts_ready_workers_and_head_readiness() -> None:
    s = spec(replicas=1)
    head = ObservedPod("c-head-x", "headgroup", "Running", ready=True, pod_ip="127.20.0.5")
    unready = ObservedPod("w", "small-group", "Running", ready=False)
    status = reconcile(s, [head, unready], SHARED).status
    assert status["availableWorkerReplicas"] == 1 and status["readyWorkerReplicas"] == 0
    assert status["state"] == ""  # a running worker whose Ray does not answer yet
    ready = ObservedPod("w", "small-group", "Running", ready=True)
    assert reconcile(s, [head, ready], SHARED).status["state"] == "ready"
    starting = ObservedPod("c-head-x", "headgroup", "Running", ready=False, pod_ip="127.20.0.5")
    assert not head_ready([starting, ready]) and head_ready([head, ready])
    status = reconcile(s, [starting, ready], SHARED).status
    assert status["state"] == ""
    by_type = {c["type"]: c for c in conditions(status, False, [], "t", head_ready([starting]))}
    assert by_type["HeadPodReady"]["status"] == "False"


def _metrics_port(argv: list[str]) -> int:
    [value] = [a.split("=", 1)[1] for a in argv if a.startswith("--metrics-export-port=")]
    return int(value)


def test_a_fixed_metrics_port_is_each_pods_own_on_a_shared_network() -> None:
    """The seeds' monitoring switch (metrics-export-port 8080, a scrape annotation): Ray
    binds it on every address, so pods sharing one network each get their own, and the
    annotation and container port say which."""
    s = spec(template={"metadata": {"annotations": {"prometheus.io/scrape": "true",
                                                    "prometheus.io/port": "8080"}},
                       "spec": {"containers": [{"name": "ray", "image": "rayproject/ray",
                                                "ports": [{"name": "metrics",
                                                           "containerPort": 8080}]}]}},
             rayStartParams={"metrics-export-port": "8080", "num-cpus": "1"})
    pods = [worker_pod(s, s.worker_groups[0], SHARED) for _ in range(2)]
    ports = [_metrics_port(_ray(p)["command"]) for p in pods]
    assert ports[0] != ports[1] and 8080 not in ports
    for pod, port in zip(pods, ports, strict=True):
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert _ray(pod)["ports"] == [{"name": "metrics", "containerPort": port}]
    plain = worker_pod(s, s.worker_groups[0], PodSettings())
    assert _metrics_port(_ray(plain)["command"]) == 8080
    assert plain["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    unset = spec()  # Ray picks a free port itself: nothing to move
    assert not any(a.startswith("--metrics-export-port") for a in
                   _ray(worker_pod(unset, unset.worker_groups[0], SHARED))["command"])
