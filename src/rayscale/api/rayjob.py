"""KubeRay's ``ray.io/v1`` RayJob: a Ray job that brings its own cluster (KubeRay v1.7).

The shape rayscale's RayJob controller fills in; names, defaults and the
status vocabulary are KubeRay's, so RayJob manifests apply unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from rayscale.api import gcs_ft
from rayscale.api.base import CRD_DEFAULT, MANAGED_BY_RULES, KubeModel, NonNegInt32, ObjectMeta
from rayscale.api.errors import field_errors
from rayscale.api.pod import PodTemplateSpec
from rayscale.api.raycluster import RayClusterSpec, RayClusterStatus, without_k8s_token_auth

JobSubmissionMode = Literal["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]
#: Ray's job status; "" is a job not yet submitted.
JobStatus = Literal["", "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"]
TERMINAL_JOB_STATUSES: frozenset[str] = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})
JobDeploymentStatus = Literal[
    "", "Initializing", "Running", "Complete", "Failed", "ValidationFailed",
    "Suspending", "Suspended", "Retrying", "Waiting",
]
TERMINAL_DEPLOYMENT_STATUSES: frozenset[str] = frozenset({"Complete", "Failed"})
JobFailedReason = Literal[
    "SubmissionFailed", "DeadlineExceeded", "PreRunningDeadlineExceeded", "AppFailed",
    "JobDeploymentStatusTransitionGracePeriodExceeded", "JobStatusCheckTimeoutExceeded",
    "ValidationFailed",
]
DeletionPolicyType = Literal["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]


class SubmitterConfig(KubeModel):
    backoff_limit: NonNegInt32 | None = None


class DeletionCondition(KubeModel):
    job_status: Literal["SUCCEEDED", "FAILED"] | None = None
    job_deployment_status: Literal["Failed"] | None = None
    ttl_seconds: NonNegInt32 = 0


class DeletionRule(KubeModel):
    policy: DeletionPolicyType
    condition: DeletionCondition


class DeletionPolicy(KubeModel):
    policy: DeletionPolicyType | None = None


class DeletionStrategy(KubeModel):
    on_success: DeletionPolicy | None = None
    on_failure: DeletionPolicy | None = None
    deletion_rules: list[DeletionRule] | None = None


class RayJobSpec(KubeModel):
    entrypoint: str | None = None
    runtime_env_yaml: str | None = Field(default=None, alias="runtimeEnvYAML")
    job_id: str | None = None
    # defaulted by the API server too, as KubeRay's CRD does: Kueue reads the stored
    # object and counts the submitter pod's quota only for K8sJobMode
    submission_mode: JobSubmissionMode = Field(default="K8sJobMode",
                                               json_schema_extra={CRD_DEFAULT: True})
    ray_cluster_spec: RayClusterSpec | None = None
    cluster_selector: dict[str, str] = Field(default_factory=dict)
    submitter_pod_template: PodTemplateSpec | None = None
    submitter_config: SubmitterConfig | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    entrypoint_num_cpus: Annotated[float, Field(ge=0)] | None = None
    entrypoint_num_gpus: Annotated[float, Field(ge=0)] | None = None
    entrypoint_resources: str | None = None
    shutdown_after_job_finishes: bool = False
    ttl_seconds_after_finished: NonNegInt32 = 0
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    pre_running_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    backoff_limit: NonNegInt32 = 0
    suspend: bool = False
    managed_by: str | None = Field(
        default=None, json_schema_extra={"x-kubernetes-validations": MANAGED_BY_RULES})
    deletion_strategy: DeletionStrategy | None = None

    @field_validator("ray_cluster_spec")
    @classmethod
    def _no_k8s_token_auth(cls, spec: RayClusterSpec | None) -> RayClusterSpec | None:
        return without_k8s_token_auth(spec, "RayJob")


class RayJobInfo(KubeModel):
    start_time: str | None = None
    end_time: str | None = None


class RayJobStatus(KubeModel):
    job_id: str | None = None
    ray_cluster_name: str | None = None
    dashboard_url: str | None = Field(default=None, alias="dashboardURL")
    job_status: JobStatus | None = None
    job_deployment_status: JobDeploymentStatus | None = None
    reason: JobFailedReason | None = None
    message: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    succeeded: int | None = None
    failed: int | None = None
    ray_job_info: RayJobInfo | None = None
    ray_cluster_status: RayClusterStatus | None = None
    job_status_check_failure_start_time: str | None = None
    observed_generation: int | None = None


class RayJob(KubeModel):
    """A ``ray.io/v1`` RayJob."""

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta
    spec: RayJobSpec
    status: RayJobStatus | None = None

    @model_validator(mode="after")
    def _gcs_fault_tolerance(self) -> RayJob:
        """KubeRay's ``ValidateRayJobSpec`` runs the RayCluster rules with the RayJob's
        annotations (they are copied to the cluster it makes)."""
        if self.spec.ray_cluster_spec is not None:
            problems = gcs_ft.problems(self.spec.ray_cluster_spec, self.metadata.annotations,
                                       at=("spec", "rayClusterSpec"))
            if problems:
                raise field_errors("RayJob", problems)
        return self


