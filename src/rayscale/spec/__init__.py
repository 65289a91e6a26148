"""rayscale.spec: the KubeRay ``ray.io/v1`` RayCluster, loaded into typed models.

Users keep writing the RayCluster YAML they already write for KubeRay;
:func:`load_cluster_spec` / :func:`parse_cluster_spec` validate it (every
problem reported at once, each naming its field path) and return a frozen
:class:`ClusterSpec`. :func:`ray_resources` is the one place a group spec
becomes Ray resources.

Modules, one job each: ``errors`` (SpecError and paths), ``quantity``
(Kubernetes quantities), ``fields`` (typed readers of raw YAML), ``resources``
(group -> Ray resources), ``model`` (the pydantic models), ``parse``
(document -> model) and ``loader`` (file -> document).
"""

from .errors import SpecError
from .loader import load_cluster_spec
from .model import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_REPLICAS,
    ClusterSpec,
    HeadGroupSpec,
    UpscalingMode,
    WorkerGroupSpec,
)
from .parse import parse_cluster_spec
from .quantity import QuantityError, parse_quantity
from .resources import ray_resources

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_REPLICAS",
    "ClusterSpec",
    "HeadGroupSpec",
    "QuantityError",
    "SpecError",
    "UpscalingMode",
    "WorkerGroupSpec",
    "load_cluster_spec",
    "parse_cluster_spec",
    "parse_quantity",
    "ray_resources",
]
