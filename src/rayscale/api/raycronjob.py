"""KubeRay's ``ray.io/v1`` RayCronJob (KubeRay v1.6+): RayJobs made on a cron schedule.

KubeRay v1.7's fields are ``jobTemplate``, ``schedule``, ``timeZone`` and
``suspend``, and its status holds ``lastScheduleTime`` only. rayscale adds,
as optional fields a KubeRay manifest never sets:

- ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit`` (the names and
  defaults of Kubernetes' batch/v1 CronJob: 3 and 1): how many finished
  RayJobs are kept; KubeRay v1.7 keeps every one;
- in the status, ``recentJobs`` (the RayJobs the RayCronJob owns, newest
  first, with their ``jobDeploymentStatus``) and ``reason`` / ``message`` when
  the spec is refused.
"""

from __future__ import annotations

from pydantic import Field

from rayscale.api.base import KubeModel, NonNegInt32, ObjectMeta
from rayscale.api.rayjob import RayJobSpec

#: batch/v1 CronJob's defaults, used when the fields are not set.
DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT = 3
DEFAULT_FAILED_JOBS_HISTORY_LIMIT = 1


class RayCronJobSpec(KubeModel):
    #: A whole RayJobSpec (not a {metadata, spec} template), as in KubeRay.
    job_template: RayJobSpec
    schedule: str
    time_zone: str | None = Field(default=None, min_length=1)
    suspend: bool | None = None
    #: rayscale: finished RayJobs (``Complete``) kept; older ones are deleted.
    successful_jobs_history_limit: NonNegInt32 | None = None
    #: rayscale: failed RayJobs (``Failed``, ``ValidationFailed``) kept.
    failed_jobs_history_limit: NonNegInt32 | None = None


class RayCronJobRun(KubeModel):
    """One RayJob a RayCronJob made (rayscale's status)."""

    name: str
    schedule_time: str | None = None
    job_deployment_status: str | None = None
    job_status: str | None = None


class RayCronJobStatus(KubeModel):
    last_schedule_time: str | None = None
    #: rayscale: the RayJobs it owns, newest first.
    recent_jobs: list[RayCronJobRun] | None = None
    #: rayscale: why the spec is refused (``InvalidRayCronJobSpec``), and how.
    reason: str | None = None
    message: str | None = None


class RayCronJob(KubeModel):
    """A ``ray.io/v1`` RayCronJob."""

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta
    spec: RayCronJobSpec
    status: RayCronJobStatus | None = None
