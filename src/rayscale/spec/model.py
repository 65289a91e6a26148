"""Typed, immutable view of a KubeRay ``ray.io/v1`` RayCluster.

Only what rayscale acts on is modelled; everything else a manifest carries
stays available in :attr:`ClusterSpec.raw` (and each group's ``template``) for
the Kubernetes operator. Build these with :func:`~.parse.parse_cluster_spec`
(or :func:`~.loader.load_cluster_spec`), which validates the manifest and
reports every problem by path; direct construction is for tests and tools.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

UpscalingMode = Literal["Default", "Conservative", "Aggressive"]

#: KubeRay's default ``maxReplicas`` (int32 max): effectively unbounded.
DEFAULT_MAX_REPLICAS = 2_147_483_647
#: KubeRay / Ray default ``autoscalerOptions.idleTimeoutSeconds``.
DEFAULT_IDLE_TIMEOUT_S = 60.0

NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Ray resources of one node: ``CPU``, ``GPU``, ``memory`` (bytes),
#: ``object_store_memory`` (bytes) and custom names, as in Ray.
Resources = dict[str, NonNegFloat]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class HeadGroupSpec(_Frozen):
    """``spec.headGroupSpec``."""

    ray_start_params: dict[str, str] = Field(default_factory=dict)
    #: Ray resources of the head node (see :mod:`rayscale.spec.resources`).
    resources: Resources = Field(default_factory=dict)
    #: The pod template's ``metadata.labels``.
    labels: dict[str, str] = Field(default_factory=dict)
    #: The raw pod template, for the Kubernetes operator.
    template: dict[str, Any] = Field(default_factory=dict)


class WorkerGroupSpec(_Frozen):
    """One entry of ``spec.workerGroupSpecs``."""

    #: ``groupName``: a DNS-1123 label, unique in the cluster.
    name: str
    #: Desired replicas, already clamped into ``[min_replicas, max_replicas]``
    #: as KubeRay does (absent ``replicas`` means ``minReplicas``).
    replicas: NonNegInt = 0
    min_replicas: NonNegInt = 0
    max_replicas: NonNegInt = DEFAULT_MAX_REPLICAS
    #: ``numOfHosts``: Ray nodes (pods) per replica, for multi-host TPU slices.
    num_of_hosts: Annotated[int, Field(ge=1)] = 1
    ray_start_params: dict[str, str] = Field(default_factory=dict)
    #: Ray resources of one node of this group; never all zero.
    resources: Resources = Field(default_factory=dict)
    #: Group ``idleTimeoutSeconds``; None = the cluster's ``idle_timeout_s``.
    idle_timeout_s: NonNegFloat | None = None
    #: rayscale extension ``priority``: higher is preferred when several
    #: groups can hold the same demand (ordered fallback between pools).
    priority: int = 0
    #: rayscale extension ``memoryTargetFraction`` in (0, 1]: scale up when
    #: the group's mean physical memory use exceeds it. None = off.
    memory_target_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    #: Group ``suspend``: KubeRay deletes the group's pods while true.
    suspend: bool = False
    #: The pod template's ``metadata.labels``.
    labels: dict[str, str] = Field(default_factory=dict)
    #: The pod template's ``spec.nodeSelector``, passed through.
    node_selector: dict[str, Any] = Field(default_factory=dict)
    #: The pod template's ``spec.tolerations``, passed through.
    tolerations: list[Any] = Field(default_factory=list)
    #: The raw pod template, for the Kubernetes operator.
    template: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _replicas_in_bounds(self) -> WorkerGroupSpec:
        # Parsing guarantees this; the check keeps hand-built specs honest too.
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"need min_replicas <= replicas <= max_replicas, got "
                f"{self.min_replicas} <= {self.replicas} <= {self.max_replicas}"
            )
        return self


class ClusterSpec(_Frozen):
    """A RayCluster: ``metadata`` plus the parts of ``spec`` rayscale uses."""

    #: ``metadata.name``.
    name: str
    #: ``metadata.namespace`` (default ``"default"``).
    namespace: str = "default"
    head: HeadGroupSpec
    worker_groups: list[WorkerGroupSpec] = Field(default_factory=list)
    enable_in_tree_autoscaling: bool = False
    #: ``autoscalerOptions.upscalingMode``.
    upscaling_mode: UpscalingMode = "Default"
    #: ``autoscalerOptions.idleTimeoutSeconds``.
    idle_timeout_s: NonNegFloat = DEFAULT_IDLE_TIMEOUT_S
    #: ``spec.suspend``.
    suspend: bool = False
    #: ``spec.rayVersion``.
    ray_version: str | None = None
    #: The whole original document (a deep copy), for the Kubernetes operator.
    raw: dict[str, Any] = Field(default_factory=dict)

    def group(self, name: str) -> WorkerGroupSpec:
        """The worker group called ``name``; KeyError if there is none."""
        for group in self.worker_groups:
            if group.name == name:
                return group
        known = ", ".join(g.name for g in self.worker_groups) or "none"
        raise KeyError(f"no worker group {name!r} in cluster {self.name!r} (groups: {known})")
