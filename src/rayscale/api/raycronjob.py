"""KubeRay's ``ray.io/v1`` RayCronJob (KubeRay v1.6+): RayJobs made on a cron schedule."""

from __future__ import annotations

from pydantic import Field

from rayscale.api.base import KubeModel, ObjectMeta
from rayscale.api.rayjob import RayJobSpec


class RayCronJobSpec(KubeModel):
    #: A whole RayJobSpec (not a {metadata, spec} template), as in KubeRay.
    job_template: RayJobSpec
    schedule: str
    time_zone: str | None = Field(default=None, min_length=1)
    suspend: bool | None = None


class RayCronJobStatus(KubeModel):
    last_schedule_time: str | None = None


class RayCronJob(KubeModel):
    """A ``ray.io/v1`` RayCronJob."""

    api_version: str | None = None
    kind: str | None = None
    metadata: ObjectMeta
    spec: RayCronJobSpec
    status: RayCronJobStatus | None = None
