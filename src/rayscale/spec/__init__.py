"""rayscale.spec: RayCluster files and documents into validated :mod:`rayscale.api` models.

Users keep writing the RayCluster YAML they already write for KubeRay;
:func:`load_cluster_spec` / :func:`parse_cluster_spec` validate it (every
problem reported at once, each naming its field path) and return a frozen
:class:`rayscale.api.RayCluster`.

Modules: ``parse`` (document -> model) and ``loader`` (file -> document).
"""

from rayscale.api import SpecError

from .loader import load_cluster_spec
from .parse import parse_cluster_spec, ray_resources

__all__ = ["SpecError", "load_cluster_spec", "parse_cluster_spec", "ray_resources"]
