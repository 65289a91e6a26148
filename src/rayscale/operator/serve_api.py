"""Ray Serve's REST API on a cluster's dashboard, and its proxies' health check.

What KubeRay's dashboard client and HTTP proxy client do for RayServices:

- ``GET /api/serve/applications/?api_type=declarative``: the applications and
  their deployments, turned into the status' ``applicationStatuses`` form
  (Serve's unnamed application is ``default``, as in KubeRay);
- ``PUT /api/serve/applications/`` with the config as JSON: Serve deploys it
  (an application whose code fails to import is accepted here and turns
  ``DEPLOY_FAILED`` later);
- ``GET http://<pod IP>:<serve port>/-/healthz``: whether a node's Serve proxy
  takes traffic (``200``).

Every call has a deadline. The token header, when the cluster has one, comes
from the caller (:mod:`rayscale.operator.dashboard`) and is never logged.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from rayscale.operator.rayservice_decide import DEFAULT_APP_NAME, Apps
from rayscale.operator.rayservice_desired import PROXY_HEALTH_PATH

APPLICATIONS_PATH = "/api/serve/applications/"
TIMEOUT_S = 5.0  # a status read
#: A deploy: the first one starts Serve's controller before it answers, which took
#: over 5 s on a busy 2-core machine (a PUT cut short is repeated: Serve takes the same
#: config again as a no-op, but the time is lost)
DEPLOY_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 2.0
MAX_ERROR_TEXT = 500


class ServeApiError(Exception):
    """The dashboard answered, with an error (its status and text, shortened)."""


def _error(got: httpx.Response, what: str) -> ServeApiError:
    text = got.text.strip().replace("\n", " ")
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT - 3] + "..."
    return ServeApiError(f"{what}: HTTP {got.status_code}: {text}")


def applications(base_url: str, headers: dict[str, str]) -> Apps:
    """Serve's applications on the cluster (``{}`` while Serve does not run)."""
    got = httpx.get(f"{base_url}{APPLICATIONS_PATH}", params={"api_type": "declarative"},
                    headers=headers, timeout=TIMEOUT_S, trust_env=False)
    if not 200 <= got.status_code < 300:
        raise _error(got, "reading Serve's applications failed")
    details = got.json()
    if not isinstance(details, dict):
        raise ServeApiError(f"not Serve's details: {got.text[:200]}")
    return app_statuses(details)


def app_statuses(details: dict[str, Any]) -> Apps:
    """Serve's instance details as KubeRay's ``applicationStatuses``."""
    out: Apps = {}
    for name, app in (details.get("applications") or {}).items():
        if not isinstance(app, dict):
            continue
        entry: dict[str, Any] = {"status": str(app.get("status") or "")}
        if app.get("message"):
            entry["message"] = str(app["message"])
        deployments: dict[str, Any] = {}
        for dname, dep in (app.get("deployments") or {}).items():
            if not isinstance(dep, dict):
                continue
            d: dict[str, Any] = {"status": str(dep.get("status") or "")}
            if dep.get("message"):
                d["message"] = str(dep["message"])
            deployments[str(dname)] = d
        if deployments:
            entry["serveDeploymentStatuses"] = deployments
        out[str(name) or DEFAULT_APP_NAME] = entry
    return out


def deploy(base_url: str, headers: dict[str, str], config_json: str) -> None:
    """Give the cluster the Serve config (KubeRay's ``UpdateDeployments``)."""
    got = httpx.put(f"{base_url}{APPLICATIONS_PATH}", content=config_json.encode(),
                    headers={**headers, "Content-Type": "application/json"},
                    timeout=DEPLOY_TIMEOUT_S, trust_env=False)
    if not 200 <= got.status_code < 300:
        raise _error(got, "deploying the Serve config failed")


def proxy_healthy(pod_ip: str, port: int) -> bool:
    """Whether the Serve proxy on ``pod_ip:port`` answers its health check."""
    try:
        got = httpx.get(f"http://{pod_ip}:{port}{PROXY_HEALTH_PATH}",
                        timeout=HEALTH_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError:
        return False
    return got.status_code == 200
