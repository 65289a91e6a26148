"""KubeRay's default liveness and readiness probes on Ray containers.

KubeRay v1.7 (``initLivenessAndReadinessProbe`` in ``common/pod.go``) gives the
Ray container of every head and worker pod a liveness and a readiness probe
unless the container has its own (each probe separately), and unless the
operator runs with ``ENABLE_PROBES_INJECTION=false``. For Ray >= 2.53 both are
an ``httpGet`` of the dashboard agent's unified health endpoint
``/api/healthz`` on ``--dashboard-agent-listen-port`` (default 52365): the
raylet's health, and on the head also the GCS's. Older Ray gets an exec probe
(``bash -c "wget ... | grep success"``).

rayscale always runs the project's Ray (2.60), whatever ``rayVersion`` says, so
it always injects the ``httpGet`` form, with KubeRay's numbers (readiness:
delay 10 s, period 5 s, timeout 2 s (head 5 s), failure threshold 10;
liveness: delay 30 s, period 5 s, timeout 2 s (head 5 s), failure threshold
120). The endpoint is public under Ray's token auth. The probe's port is the
agent port the pod's ``ray start`` is given (:func:`agent_port`), so a pod is
Ready when its Ray answers, not when a process started.

A RayService's worker pods are Ready when their Serve proxy is (KubeRay adds the
proxy's ``/-/healthz`` to their readiness ``wget`` line, failure threshold 1):
here their readiness probe is an ``httpGet`` of the proxy's ``/-/healthz`` on the
Serve port, failure threshold 1, and their liveness stays the agent's (an exec
probe would start a process every 5 s per pod). The serve Service selects
Ready pods, so a worker whose proxy stops answering leaves it within one period.
"""

from __future__ import annotations

import os
from typing import Any

from rayscale.ports import free_port

ENABLE_ENV = "ENABLE_PROBES_INJECTION"
HEALTH_PATH = "/api/healthz"
SERVE_HEALTH_PATH = "/-/healthz"  # the Serve proxy's (KubeRay's RayServeProxyHealthPath)
SERVE_FAILURE_THRESHOLD = 1  # KubeRay's ServeReadinessProbeFailureThreshold
DEFAULT_AGENT_PORT = 52365
AGENT_PORT_PARAM = "dashboard-agent-listen-port"


def enabled() -> bool:
    """KubeRay's flag: only ``ENABLE_PROBES_INJECTION=false`` turns injection off."""
    return os.environ.get(ENABLE_ENV, "").lower() != "false"


def agent_port(start_params: dict[str, str], shared_network: bool) -> int:
    """The dashboard agent's port for one pod's ``ray start``.

    The user's ``dashboard-agent-listen-port`` wins (as in KubeRay). With a shared
    pod network (the dev cluster's virtual node: every pod has its own loopback
    IP, but the agent also binds 127.0.0.1 on its port) each pod gets a port free
    on this machine, so two pods' agents never collide and the probe knows where
    to ask; otherwise Ray's default.
    """
    raw = start_params.get(AGENT_PORT_PARAM, "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return free_port() if shared_network else DEFAULT_AGENT_PORT


def default_probes(head: bool, port: int) -> dict[str, dict[str, Any]]:
    """KubeRay's two probes for a head or worker Ray container on agent ``port``."""
    action = {"path": HEALTH_PATH, "port": port}
    timeout = 5 if head else 2
    return {
        "livenessProbe": {"httpGet": dict(action), "initialDelaySeconds": 30,
                          "timeoutSeconds": timeout, "periodSeconds": 5,
                          "successThreshold": 1, "failureThreshold": 120},
        "readinessProbe": {"httpGet": dict(action), "initialDelaySeconds": 10,
                           "timeoutSeconds": timeout, "periodSeconds": 5,
                           "successThreshold": 1, "failureThreshold": 10},
    }


def inject(container: dict[str, Any], head: bool, port: int,
           serve_port: int | None = None) -> None:
    """Add the probes the container does not set itself (when injection is on);
    ``serve_port``: a RayService worker's, whose readiness is its Serve proxy's."""
    if not enabled():
        return
    defaults = default_probes(head, port)
    if serve_port is not None and not head:
        ready = defaults["readinessProbe"]
        ready["httpGet"] = {"path": SERVE_HEALTH_PATH, "port": serve_port}
        ready["failureThreshold"] = SERVE_FAILURE_THRESHOLD
    for key, probe in defaults.items():
        if container.get(key) is None:
            container[key] = probe
