"""A Ray Serve config: what KubeRay's ``serveConfigV2`` holds and ``serve deploy`` takes.

The schema is Ray Serve's own (``ray.serve.schema.ServeDeploySchema``, Ray
2.60), with Serve's snake_case field names: ``applications`` (each with
``name``, ``import_path``, ``route_prefix``, ``runtime_env``, ``args`` and
``deployments``: ``name``, ``num_replicas`` or ``autoscaling_config``,
``user_config``, ``ray_actor_options``, ...), ``http_options``,
``grpc_options`` and ``proxy_location``. These models check what rayscale
reads and what users get wrong most (a missing ``import_path``, a replica
count beside an autoscaling config, duplicate names or routes), so a bad
config is refused before anything is sent, each problem named by its path
(``applications[0].import_path: required``). Fields not modelled here are
kept and passed on as written; Serve validates them again when the config
reaches it. Pure: no Ray import, no I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from rayscale.api.errors import field_errors

ProxyLocation = Literal["Disabled", "HeadOnly", "EveryNode", "NoServer"]
#: Serve's application status values (``ray.serve.schema.ApplicationStatus``).
ApplicationStatus = Literal[
    "NOT_STARTED", "DEPLOYING", "DEPLOY_FAILED", "RUNNING", "UNHEALTHY", "DELETING",
]
#: Serve's application statuses that end a deploy (the rest move on by themselves).
SETTLED_APP_STATUSES: frozenset[str] = frozenset({"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"})
#: Serve's default application name, when ``name`` is not given.
DEFAULT_APP_NAME = "default"

PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegNumber = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=1, le=65535)]
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*[:.][A-Za-z_][\w.]*")


class ServeModel(BaseModel):
    """Base of the Serve config models: Serve's names, unknown fields kept, frozen."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    def to_document(self) -> dict[str, Any]:
        """The config as written (what was set), for Serve's REST API."""
        return self.model_dump(mode="json", exclude_unset=True)


class AutoscalingConfig(ServeModel):
    min_replicas: Annotated[int, Field(ge=0)] = 1
    initial_replicas: Annotated[int, Field(ge=0)] | None = None
    max_replicas: Annotated[int, Field(ge=1)] = 1
    target_ongoing_requests: PositiveNumber | None = None
    upscale_delay_s: NonNegNumber | None = None
    downscale_delay_s: NonNegNumber | None = None

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        problems = []
        if self.max_replicas < self.min_replicas:
            problems.append((("max_replicas",), (
                f"must be >= min_replicas ({self.max_replicas} < {self.min_replicas})"),
                self.max_replicas))
        if self.initial_replicas is not None and not (
                self.min_replicas <= self.initial_replicas <= self.max_replicas):
            problems.append((("initial_replicas",), (
                f"must be between min_replicas and max_replicas "
                f"({self.min_replicas}..{self.max_replicas}), got {self.initial_replicas}"),
                self.initial_replicas))
        if problems:
            raise field_errors("AutoscalingConfig", problems)
        return self


class RayActorOptions(ServeModel):
    num_cpus: NonNegNumber | None = None
    num_gpus: NonNegNumber | None = None
    memory: NonNegNumber | None = None
    resources: dict[str, NonNegNumber] | None = None
    runtime_env: dict[str, JsonValue] | None = None


class ServeDeployment(ServeModel):
    """One entry of an application's ``deployments``: options over the code's own."""

    name: Annotated[str, Field(min_length=1)]
    num_replicas: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None
    autoscaling_config: AutoscalingConfig | None = None
    max_ongoing_requests: Annotated[int, Field(ge=1)] | None = None
    user_config: dict[str, JsonValue] | None = None
    ray_actor_options: RayActorOptions | None = None

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> ServeDeployment:
        if isinstance(self.num_replicas, int) and self.autoscaling_config is not None:
            raise field_errors("ServeDeployment", [(("num_replicas",), (
                "give num_replicas or autoscaling_config, not both (Serve refuses a fixed "
                "replica count for an autoscaling deployment)"), self.num_replicas)])
        return self


class ServeApplication(ServeModel):
    name: Annotated[str, Field(min_length=1)] = DEFAULT_APP_NAME
    import_path: str
    route_prefix: str | None = None
    runtime_env: dict[str, JsonValue] = Field(default_factory=dict)
    args: dict[str, JsonValue] = Field(default_factory=dict)
    deployments: list[ServeDeployment] = Field(default_factory=list)

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if value.count(":") > 1 or not _IMPORT_PATH.fullmatch(value):
            raise ValueError(f"must be 'module.attribute' or 'module:attribute' (the bound "
                             f"application), got {value!r}")
        return value

    @field_validator("route_prefix")
    @classmethod
    def _route_prefix(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or
                                  (value != "/" and value.endswith("/"))):
            raise ValueError(f"must start with '/' and not end with one (except '/' "
                             f"itself), got {value!r}")
        return value

    @model_validator(mode="after")
    def _unique_deployments(self) -> ServeApplication:
        seen: set[str] = set()
        problems = []
        for i, deployment in enumerate(self.deployments):
            if deployment.name in seen:
                problems.append((("deployments", i, "name"),
                                 f"duplicate deployment name {deployment.name!r}",
                                 deployment.name))
            seen.add(deployment.name)
        if problems:
            raise field_errors("ServeApplication", problems)
        return self


class HttpOptions(ServeModel):
    host: str | None = None
    port: Port | None = None


class GrpcOptions(ServeModel):
    port: Port | None = None
    grpc_servicer_functions: list[str] = Field(default_factory=list)


class ServeConfig(ServeModel):
    """A Serve config file (``serve deploy``), or a RayService's ``serveConfigV2``."""

    applications: Annotated[list[ServeApplication], Field(min_length=1)]
    http_options: HttpOptions | None = None
    grpc_options: GrpcOptions | None = None
    proxy_location: ProxyLocation | None = None

    @model_validator(mode="after")
    def _unique_apps(self) -> ServeConfig:
        names: set[str] = set()
        routes: set[str] = set()
        problems = []
        for i, app in enumerate(self.applications):
            if app.name in names:
                problems.append((("applications", i, "name"),
                                 f"duplicate application name {app.name!r}", app.name))
            names.add(app.name)
            if app.route_prefix is not None:
                if app.route_prefix in routes:
                    problems.append((("applications", i, "route_prefix"),
                                     f"another application has route_prefix "
                                     f"{app.route_prefix!r}", app.route_prefix))
                routes.add(app.route_prefix)
        if problems:
            raise field_errors("ServeConfig", problems)
        return self

    def app_names(self) -> list[str]:
        return [app.name for app in self.applications]
