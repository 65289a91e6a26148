"""KubeRay's ``ray.io/v1`` RayService: Ray Serve applications on a managed cluster (v1.7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rayscale.api import gcs_ft
from rayscale.api.base import Condition, KubeModel, NonNegInt32, ObjectMeta
from rayscale.api.errors import field_errors
from rayscale.api.raycluster import RayClusterSpec, RayClusterStatus, without_k8s_token_auth

RayServiceUpgradeType = Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]
RayServiceConditionType = Literal[
    "Ready", "UpgradeInProgress", "RollbackInProgress", "Suspending", "Suspended",
]


class ClusterUpgradeOptions(KubeModel):
    max_surge_percent: NonNegInt32 = 100
    step_size_percent: NonNegInt32
    interval_seconds: NonNegInt32
    gateway_class_name: str


class RayServiceUpgradeStrategy(KubeModel):
    type: RayServiceUpgradeType | None = None
    cluster_upgrade_options: ClusterUpgradeOptions | None = None


class RayServiceSpec(KubeModel):
    serve_config_v2: str | None = Field(default=None, alias="serveConfigV2")
    ray_cluster_config: RayClusterSpec
    upgrade_strategy: RayServiceUpgradeStrategy | None = None
    serve_service: dict[str, Any] | None = None
    ray_cluster_deletion_delay_seconds: NonNegInt32 | None = None
    exclude_head_pod_from_serve_svc: bool = False
    suspend: bool = False
    managed_by: str | None = None
    #: Deprecated in KubeRay and unused; accepted so old manifests apply.
    service_unhealthy_second_threshold: int | None = None
    deployment_unhealthy_second_threshold: int | None = None

    @field_validator("ray_cluster_config")
    @classmethod
    def _no_k8s_token_auth(cls, spec: RayClusterSpec) -> RayClusterSpec:
        checked = without_k8s_token_auth(spec, "RayService")
        assert checked is not None
        return checked


class ServeDeploymentStatus(KubeModel):
    status: str | None = None
    message: str | None = None


class AppStatus(KubeModel):
    status: str | None = None
    message: str | None = None
    serve_deployment_statuses: dict[str, ServeDeploymentStatus] = Field(default_factory=dict)


class RayServiceStatus(KubeModel):
    """The status of the active or the pending cluster of a RayService."""

    application_statuses: dict[str, AppStatus] = Field(default_factory=dict)
    target_capacity: int | None = None
    traffic_routed_percent: int | None = None
    last_traffic_migrated_time: str | None = None
    ray_cluster_name: str | None = None
    ray_cluster_status: RayClusterStatus | None = None


class RayServiceStatuses(KubeModel):
    """``status`` of a RayService."""

    conditions: list[Condition] = Field(default_factory=list)
    last_update_time: str | None = None
    service_status: str | None = None
    active_service_status: RayServiceStatus | None = None
    pending_service_status: RayServiceStatus | None = None
    num_serve_endpoints: int | None = None
    observed_generation: int | None = None


class RayService(KubeModel):
    """A ``ray.io/v1`` RayService."""

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta
    spec: RayServiceSpec
    status: RayServiceStatuses | None = None

    @model_validator(mode="after")
    def _gcs_fault_tolerance(self) -> RayService:
        """KubeRay's ``ValidateRayServiceSpec`` runs the RayCluster rules with the
        RayService's annotations."""
        problems = gcs_ft.problems(self.spec.ray_cluster_config, self.metadata.annotations,
                                   at=("spec", "rayClusterConfig"))
        if problems:
            raise field_errors("RayService", problems)
        return self
