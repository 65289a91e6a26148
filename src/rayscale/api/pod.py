"""The parts of a Kubernetes pod template that rayscale reads.

The Ray container is the first container of a group's template (KubeRay's
rule). Everything else a template carries (volumes, probes, env, security
contexts) is kept as written and passed on to Kubernetes.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from rayscale.api.base import KubeModel, ObjectMeta, Quantity


class ResourceRequirements(KubeModel):
    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class ContainerPort(KubeModel):
    name: str | None = None
    container_port: int


class Container(KubeModel):
    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)


class Toleration(KubeModel):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class PodSpec(KubeModel):
    containers: list[Container] = Field(default_factory=list, validate_default=True)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    service_account_name: str | None = None
    restart_policy: str | None = None

    @field_validator("containers")
    @classmethod
    def _has_ray_container(cls, containers: list[Container]) -> list[Container]:
        if not containers:
            raise ValueError("must list at least one container (the Ray container)")
        return containers

    @property
    def ray_container(self) -> Container:
        """The Ray container: the first one, as KubeRay decides."""
        return self.containers[0]


class PodTemplateSpec(KubeModel):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec

