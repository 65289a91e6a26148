"""Ray Serve on a local cluster: `rayscale serve deploy | delete`, and Serve in `status`.

A Serve config (a Serve config file, or a RayService's ``serveConfigV2``:
:mod:`rayscale.spec.service`) goes to Serve's REST API on the head's
dashboard (``PUT /api/serve/applications/`` with the cluster's token), as
KubeRay's RayService controller sends it. Serve applies it declaratively:
applications left out are deleted, a changed ``user_config`` reconfigures
the running replicas in place, a changed import path or code starts new
replicas before the old ones stop.

What local mode decides, and why (docs/serve.md, "Local mode"):

- **Address.** Serve's HTTP proxy listens on the head's loopback IP;
  ``http_options.host`` is always that (KubeRay manifests often say
  ``0.0.0.0``, which would listen on every address of the machine).
- **Port.** ``http_options.port`` when the config gives one (it must be free
  on the head's IP); else the port Serve already listens on in this cluster;
  else a port free on every address. Clusters have their own IPs, so they
  never collide. Serve keeps its HTTP options while it runs: a config asking
  for another port then is refused (``rayscale serve delete NAME`` first).
- **Proxies.** ``proxy_location: HeadOnly``. All local nodes share this
  machine, so Serve's default, a proxy on every node with a replica, only
  adds proxies listening on the head's same address and port (Serve sets
  SO_REUSEPORT): the kernel spreads connections over them blindly, a
  draining proxy still gets new ones until Serve stops it, and each keeps
  its worker busy for Serve's 30 s proxy draining after its last replica
  left. ``EveryNode`` in a config runs as HeadOnly, and the deploy says so.
- **gRPC.** Serve's gRPC proxy binds every address (``[::]``): refused.
- **Local code.** A ``runtime_env`` ``working_dir`` or ``py_modules`` entry
  that is a local path (relative to the config file) is uploaded to the
  cluster first, as ``ray job submit`` does (Ray's own ``serve deploy``
  takes remote URIs only).

Every check runs before anything is sent (:func:`preflight`, then the
checks against the running Serve): a bad config changes nothing.

A deploy is done when every application shows the config just sent
(``deployed_app_config``) with a settled status (RUNNING, DEPLOY_FAILED,
UNHEALTHY) and, for a running one, the proxy routes its prefix
(``/-/routes``): ready means Serve answers. A redeploy whose application
fails to build (Ray 2.60, measured): the application turns DEPLOY_FAILED
with the traceback in its message, Serve lists no deployments for it, and
the previous version's replicas go on serving its route.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from rayscale import ports, rayauth
from rayscale.api import SpecError
from rayscale.api.errors import messages
from rayscale.api.serveconfig import DEFAULT_APP_NAME, SETTLED_APP_STATUSES, ServeConfig
from rayscale.local.cluster import is_running
from rayscale.local.store import ClusterDir, ClusterRecord
from rayscale.paths import write_private

SERVE_API = "/api/serve/applications/"
ROUTES_PATH = "/-/routes"
LOCAL_PROXY_LOCATION = "HeadOnly"
#: Starting Serve (its controller and proxy) takes seconds on a busy machine.
PUT_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 30.0
POLL_S = 0.5
#: Stands in for an uploaded package while Ray's schema checks a config (preflight).
_PLACEHOLDER_URI = "gcs://_ray_pkg_0000000000000000.zip"


class ServeError(RuntimeError):
    """Serve could not be reached, refused the config, or failed to deploy it."""


class ServeRecord(BaseModel):
    """``serve.json``: what was last applied, and where Serve answers."""

    model_config = ConfigDict(extra="ignore")

    host: str
    port: int | None  # None: proxies disabled
    proxy_location: str
    applications: list[str]
    applied_at: float
    source: str

    @property
    def http_url(self) -> str | None:
        return f"http://{self.host}:{self.port}" if self.port is not None else None


@dataclass(frozen=True)
class RunningServe:
    """The HTTP options of a Serve instance that runs: fixed until it stops."""

    host: str | None
    port: int | None
    proxy_location: str | None

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> RunningServe | None:
        if not details.get("controller_info"):
            return None  # Serve's answer when no controller runs
        http = details.get("http_options") or {}
        return cls(http.get("host"), http.get("port"), details.get("proxy_location"))


@dataclass(frozen=True)
class LocalDocument:
    """The config as Serve gets it in local mode, and what local mode changed in it."""

    document: dict[str, Any]
    host: str
    port: int | None
    proxy_location: str
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AppView:
    """One application as Serve reports it (``rayscale status``, a deploy's result)."""

    name: str
    status: str
    message: str
    route_prefix: str | None
    routed: bool | None  # the proxy routes its prefix (None: not known)
    deployments: dict[str, dict[str, Any]]

    @property
    def reason(self) -> str:
        """The message's last line: for a failed build, the exception (the traceback's end)."""
        lines = [line.strip() for line in self.message.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "reason": self.reason,
                "route_prefix": self.route_prefix, "routed": self.routed,
                "deployments": self.deployments}


@dataclass(frozen=True)
class DeployResult:
    http_url: str | None
    apps: list[AppView]
    notices: list[str]

    @property
    def failed(self) -> list[AppView]:
        return [app for app in self.apps if app.status != "RUNNING"]


# ----------------------------------------------------------------- checks


def preflight(config: ServeConfig, base_dir: Path) -> None:
    """Every check that needs no cluster: local mode's refusals, local code paths, and
    Ray Serve's own schema (``ServeDeploySchema``, as the dashboard checks a PUT)."""
    problems = _local_refusals(config)
    document = config.to_document()
    for loc, path in _local_code(document, base_dir):
        if not path.exists():
            problems.append(f"{_path(loc)}: no such file or directory: {path}")
        _set(document, loc, _PLACEHOLDER_URI)  # Ray's schema takes remote URIs only
    problems += ray_schema_problems(document)
    if problems:
        raise SpecError(problems)


def _local_refusals(config: ServeConfig) -> list[str]:
    grpc = config.grpc_options
    if grpc is not None and grpc.grpc_servicer_functions:
        return ["grpc_options.grpc_servicer_functions: Serve's gRPC proxy listens on every "
                "address of the machine ([::]) and local mode serves on loopback only; "
                "leave it empty"]
    return []


def ray_schema_problems(document: dict[str, Any]) -> list[str]:
    """What Ray Serve's schema refuses in ``document``, each naming its field."""
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(document)
    except ValidationError as exc:
        return messages(exc, under_spec=False)
    return []


def local_document(
    config: ServeConfig,
    head_ip: str,
    running: RunningServe | None,
    pick_port: Callable[[], int] = ports.free_port,
    port_free: Callable[[str, int], bool] = lambda host, port: ports.port_free(port, host),
    previous_port: int | None = None,
) -> LocalDocument:
    """The config with local mode's address, port and proxies (module docstring).

    ``previous_port``: the port of the config last applied here (``serve.json``); a
    Serve started again (its controller died) gets it back when it is free, so the
    address stays the same.

    Raises SpecError, naming the field, for what cannot be applied to this cluster now.
    """
    problems = _local_refusals(config)
    notices = []
    asked = config.proxy_location
    location = "Disabled" if asked in ("Disabled", "NoServer") else LOCAL_PROXY_LOCATION
    if asked == "EveryNode":
        notices.append("proxy_location: EveryNode runs as HeadOnly in local mode (every node "
                       "shares this machine; see docs/serve.md)")
    http = config.http_options
    asked_host = http.host if http is not None else None
    asked_port = http.port if http is not None else None
    if asked_host not in (None, head_ip):
        notices.append(f"http_options.host: Serve listens on the head's loopback address "
                       f"{head_ip}, not {asked_host!r}, in local mode")
    if running is not None:
        if running.host not in (None, head_ip):  # started by someone else (serve.run)
            problems.append(
                f"http_options.host: Serve already runs in this cluster listening on "
                f"{running.host}, not the head's loopback address {head_ip}, and keeps it "
                f"while it runs; `rayscale serve delete` it first")
        if asked_port is not None and running.port not in (None, asked_port):
            problems.append(
                f"http_options.port: Serve already listens on port {running.port} in this "
                f"cluster and keeps its HTTP options while it runs; leave the port out, set "
                f"{running.port}, or `rayscale serve delete` the cluster's Serve first")
        if running.proxy_location not in (None, location):
            problems.append(
                f"proxy_location: Serve already runs with {running.proxy_location} in this "
                f"cluster and keeps it while it runs; `rayscale serve delete` it first")
        port = running.port if running.port is not None else asked_port
    elif asked_port is not None:
        if not port_free(head_ip, asked_port):
            problems.append(f"http_options.port: port {asked_port} is in use on {head_ip}")
        port = asked_port
    elif previous_port is not None and port_free(head_ip, previous_port):
        port = previous_port
    else:
        port = pick_port()
    if problems:
        raise SpecError(problems)
    document = config.to_document()
    document["proxy_location"] = location
    document["http_options"] = {**document.get("http_options", {}), "host": head_ip,
                                "port": port}
    return LocalDocument(document, head_ip, port if location != "Disabled" else None, location,
                         notices)


def _local_code(document: dict[str, Any], base_dir: Path
                ) -> Iterator[tuple[tuple[str | int, ...], Path]]:
    """Each application's ``working_dir`` and ``py_modules`` entry that is a local path."""
    for i, app in enumerate(document.get("applications", [])):
        env = app.get("runtime_env") or {}
        working_dir = env.get("working_dir")
        if isinstance(working_dir, str) and "://" not in working_dir:
            yield ("applications", i, "runtime_env", "working_dir"), base_dir / working_dir
        for j, module in enumerate(env.get("py_modules") or []):
            if isinstance(module, str) and "://" not in module:
                yield ("applications", i, "runtime_env", "py_modules", j), base_dir / module


def _set(document: Any, loc: tuple[str | int, ...], value: Any) -> None:
    for part in loc[:-1]:
        document = document[part]
    document[loc[-1]] = value


def _path(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


# ----------------------------------------------------------------- Serve's REST API


class ServeApi:
    """Serve's REST API on a local cluster's dashboard, with the cluster's token."""

    def __init__(self, record: ClusterRecord, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.record = record
        self.url = record.dashboard_url
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Any = None,
                 timeout_s: float | None = None) -> httpx.Response:
        try:
            return httpx.request(method, self.url + path, json=body, trust_env=False,
                                 headers=rayauth.bearer_headers(self.record.token_file),
                                 timeout=timeout_s or self.timeout_s)
        except httpx.HTTPError as exc:
            raise ServeError(f"the Ray head's dashboard ({self.url}) did not answer: "
                             f"{type(exc).__name__}: {exc}") from None

    def details(self) -> dict[str, Any]:
        reply = self._request("GET", SERVE_API)
        if reply.status_code != 200:
            raise ServeError(f"Serve's REST API ({self.url}{SERVE_API}) answered "
                             f"{reply.status_code}: {reply.text[:2000]}")
        details: dict[str, Any] = reply.json()
        return details

    def put(self, document: dict[str, Any]) -> None:
        reply = self._request("PUT", SERVE_API, document, timeout_s=PUT_TIMEOUT_S)
        if reply.status_code != 200:
            raise ServeError(f"Serve refused the config ({reply.status_code}): "
                             f"{reply.text[:4000]}")

    def delete(self) -> None:
        reply = self._request("DELETE", SERVE_API, timeout_s=PUT_TIMEOUT_S)
        if reply.status_code != 200:
            raise ServeError(f"Serve's REST API refused the delete ({reply.status_code}): "
                             f"{reply.text[:2000]}")


def proxy_routes(host: str, port: int, timeout_s: float = 5.0) -> dict[str, str] | None:
    """The proxy's route table (prefix -> application), or None when it does not answer."""
    try:
        reply = httpx.get(f"http://{host}:{port}{ROUTES_PATH}", timeout=timeout_s, trust_env=False)
        if reply.status_code != 200:
            return None
        routes = reply.json()
    except (httpx.HTTPError, ValueError):
        return None
    return routes if isinstance(routes, dict) else None


def upload_local_code(record: ClusterRecord, document: dict[str, Any], base_dir: Path,
                      progress: Callable[[str], None] = lambda _: None) -> None:
    """Replace local ``working_dir`` / ``py_modules`` paths by packages uploaded to the
    cluster (``gcs://`` URIs), as ``ray job submit`` does: through Ray's submission
    client, whose upload helpers are the ones Ray's job SDK uses (not public API)."""
    local = list(_local_code(document, base_dir))
    if not local:
        return
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    for name in ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)  # progress says it instead
    loc, path = local[0]
    try:
        client = ServeSubmissionClient(
            record.dashboard_url, headers=rayauth.bearer_headers(record.token_file))
        for loc, path in local:
            progress(f"uploading {_path(loc)} ({path.resolve()}) to the cluster")
            env = {loc[3]: str(path.resolve())} if loc[3] == "working_dir" else \
                {"py_modules": [str(path.resolve())]}
            if loc[3] == "working_dir":
                client._upload_working_dir_if_needed(env)
                _set(document, loc, env["working_dir"])
            else:
                client._upload_py_modules_if_needed(env)
                _set(document, loc, env["py_modules"][0])
    except (OSError, RuntimeError, ValueError) as exc:  # requests' errors are OSErrors
        raise ServeError(f"uploading {_path(loc)} ({path}) to the cluster failed: "
                         f"{exc}") from None


# ----------------------------------------------------------------- deploy, delete, view


def deploy(
    cluster: ClusterDir,
    config: ServeConfig,
    base_dir: Path,
    source: str,
    wait_s: float = 300.0,
    progress: Callable[[str], None] = lambda _: None,
) -> DeployResult:
    """Apply ``config`` to the running cluster; with ``wait_s`` > 0, wait until it settled.

    SpecError: the config cannot be applied (nothing was sent). ServeError: Serve could
    not be reached or refused it, or it did not settle in time. A settled deploy whose
    applications failed is a result (:attr:`DeployResult.failed`), not an exception.
    """
    preflight(config, base_dir)
    if not is_running(cluster):
        raise ServeError(f"cluster {cluster.name!r} is not running")
    record = cluster.load()
    api = ServeApi(record)
    running = RunningServe.from_details(api.details())
    previous = load_record(cluster)
    local = local_document(config, record.head_ip, running,
                           previous_port=previous.port if previous is not None else None)
    for notice in local.notices:
        progress(notice)
    document = copy.deepcopy(local.document)
    upload_local_code(record, document, base_dir, progress)
    progress("starting Serve and applying the config" if running is None else
             "applying the config to the running Serve")
    api.put(document)
    write_private(cluster.serve_file, ServeRecord(
        host=local.host, port=local.port, proxy_location=local.proxy_location,
        applications=config.app_names(), applied_at=time.time(), source=source,
    ).model_dump_json(indent=2))
    url = f"http://{local.host}:{local.port}" if local.port is not None else None
    if wait_s <= 0:
        return DeployResult(url, [], local.notices)
    deadline = time.monotonic() + wait_s
    details = _wait_settled(api, document, deadline, progress)
    apps = _app_views(details, config.app_names(), None)
    if local.port is not None:
        apps = _wait_routed(local.host, local.port, details, apps, deadline)
    return DeployResult(url, apps, local.notices)


def delete(cluster: ClusterDir) -> None:
    """Shut Serve down on the cluster (every application, its controller and proxies)."""
    if not is_running(cluster):
        raise ServeError(f"cluster {cluster.name!r} is not running")
    ServeApi(cluster.load()).delete()
    cluster.serve_file.unlink(missing_ok=True)


def load_record(cluster: ClusterDir) -> ServeRecord | None:
    try:
        return ServeRecord.model_validate_json(cluster.serve_file.read_text())
    except (OSError, ValueError):
        return None


def serve_view(cluster: ClusterDir, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """Serve's part of ``rayscale status``, read now; None if nothing was deployed with
    rayscale (asking the dashboard about Serve makes it connect a driver, so clusters
    that never ran Serve are not asked)."""
    serve = load_record(cluster)
    if serve is None:
        return None
    view: dict[str, Any] = {"http": serve.http_url, "proxy_location": serve.proxy_location,
                            "proxy": None, "applications": {}, "problems": []}
    try:
        details = ServeApi(cluster.load(), timeout_s=timeout_s).details()
    except ServeError as exc:
        view["problems"].append(str(exc))
        return view
    if RunningServe.from_details(details) is None:
        view["problems"].append("Serve is not running in this cluster")
        return view
    routes = proxy_routes(serve.host, serve.port) if serve.port is not None else None
    if serve.port is not None:
        view["proxy"] = "answering" if routes is not None else "not answering"
        if routes is None:
            view["problems"].append(f"Serve's HTTP proxy ({serve.http_url}) does not answer")
    for app in _app_views(details, list(details.get("applications") or {}), routes):
        view["applications"][app.name] = app.to_json()
    return view


def _app_views(details: dict[str, Any], names: list[str],
               routes: dict[str, str] | None) -> list[AppView]:
    apps = details.get("applications") or {}
    out = []
    for name in names:
        app = apps.get(name) or {}
        prefix = app.get("route_prefix")
        deployments = {
            dname: {"status": d.get("status"), "message": d.get("message") or "",
                    "replicas": dict(Counter(r.get("state") for r in d.get("replicas") or []))}
            for dname, d in (app.get("deployments") or {}).items()}
        out.append(AppView(
            name=name, status=app.get("status") or "NOT_STARTED",
            message=app.get("message") or "", route_prefix=prefix,
            routed=(prefix in routes) if routes is not None and prefix is not None else None,
            deployments=deployments))
    return out


def _normalized(app: dict[str, Any]) -> str:
    """An application config as Serve's schema reads it (``0`` and ``0.0`` alike)."""
    from ray.serve.schema import ServeApplicationSchema

    try:
        model = ServeApplicationSchema.model_validate(app)
    except ValidationError:
        return json.dumps(app, sort_keys=True)
    return json.dumps(model.model_dump(mode="json", exclude_unset=True), sort_keys=True)


def _wait_settled(api: ServeApi, document: dict[str, Any], deadline: float,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    """Until each application runs the config just sent, in a settled status."""
    wanted = {app.get("name", DEFAULT_APP_NAME): _normalized(app)
              for app in document["applications"]}
    last: dict[str, str] = {}
    while True:
        details = api.details()
        apps = details.get("applications") or {}
        now: dict[str, str] = {}
        for name, config in wanted.items():
            app = apps.get(name)
            if app is None or _normalized(app.get("deployed_app_config") or {}) != config:
                now[name] = "waiting for Serve to take the new config"
            else:
                now[name] = app.get("status", "")
        for name, status in now.items():
            if last.get(name) != status:
                progress(f"application {name}: {status}")
        last = now
        if all(status in SETTLED_APP_STATUSES for status in now.values()):
            return details
        if time.monotonic() > deadline:
            raise ServeError("the applications did not settle in time: " + ", ".join(
                f"{name} {status}" for name, status in now.items()))
        time.sleep(POLL_S)


def _wait_routed(host: str, port: int, details: dict[str, Any], apps: list[AppView],
                 deadline: float) -> list[AppView]:
    """Running applications are ready once the proxy routes their prefixes."""
    wanted = {app.route_prefix for app in apps
              if app.status == "RUNNING" and app.route_prefix is not None}
    while True:
        routes = proxy_routes(host, port)
        if routes is not None and wanted <= set(routes):
            return _app_views(details, [app.name for app in apps], routes)
        if time.monotonic() > deadline:
            raise ServeError(f"Serve's HTTP proxy (http://{host}:{port}) does not route "
                             f"{sorted(wanted - set(routes or {}))} in time")
        time.sleep(POLL_S)
