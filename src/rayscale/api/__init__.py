"""rayscale.api: the one vocabulary. Typed models of KubeRay's ``ray.io/v1`` resources.

RayCluster, RayJob, RayCronJob and RayService, specs and status, with
KubeRay's field names (as aliases of snake_case attributes) and defaults as of
KubeRay v1.7. Local mode, the operator, the autoscaler sidecar and the CLI all
read and write these models; the CRDs under ``deploy/crds`` are generated from
them (``rayscale crds``). Pure: no I/O.

Modules: ``base`` (shared config and object types), ``errors`` (validation
errors named by field path), ``quantity`` (Kubernetes quantities), ``pod``
(the pod template parts rayscale reads), ``resources`` (a group's Ray
resources), ``raycluster``, ``rayjob``, ``raycronjob``, ``rayservice``, ``crd``
(their CustomResourceDefinitions).
"""

from rayscale.api.base import Condition, KubeModel, ObjectMeta, Resources
from rayscale.api.errors import SpecError, describe
from rayscale.api.pod import Container, PodSpec, PodTemplateSpec, ResourceRequirements, Toleration
from rayscale.api.quantity import QuantityError, parse_quantity
from rayscale.api.raycluster import (
    DEFAULT_IDLE_TIMEOUT_S,
    AuthOptions,
    AutoscalerOptions,
    GcsFaultToleranceOptions,
    HeadGroupSpec,
    HeadInfo,
    RayCluster,
    RayClusterSpec,
    RayClusterStatus,
    ScaleStrategy,
    UpscalingMode,
    WorkerGroupSpec,
)
from rayscale.api.raycronjob import RayCronJob, RayCronJobSpec, RayCronJobStatus
from rayscale.api.rayjob import RayJob, RayJobSpec, RayJobStatus
from rayscale.api.rayservice import RayService, RayServiceSpec, RayServiceStatuses
from rayscale.api.resources import derive_ray_resources
from rayscale.labels import UNBOUNDED_REPLICAS

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "UNBOUNDED_REPLICAS",
    "AuthOptions",
    "AutoscalerOptions",
    "Condition",
    "Container",
    "GcsFaultToleranceOptions",
    "HeadGroupSpec",
    "HeadInfo",
    "KubeModel",
    "ObjectMeta",
    "PodSpec",
    "PodTemplateSpec",
    "QuantityError",
    "RayCluster",
    "RayClusterSpec",
    "RayClusterStatus",
    "RayCronJob",
    "RayCronJobSpec",
    "RayCronJobStatus",
    "RayJob",
    "RayJobSpec",
    "RayJobStatus",
    "RayService",
    "RayServiceSpec",
    "RayServiceStatuses",
    "ResourceRequirements",
    "Resources",
    "ScaleStrategy",
    "SpecError",
    "Toleration",
    "UpscalingMode",
    "WorkerGroupSpec",
    "derive_ray_resources",
    "describe",
    "parse_quantity",
]
