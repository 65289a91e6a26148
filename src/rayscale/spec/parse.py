"""A RayCluster document (already loaded from YAML) into a validated :class:`RayCluster`.

pydantic validates the whole document in one pass and collects every
problem with its path (the rules are in :mod:`rayscale.api.raycluster`);
they are raised together as one :class:`SpecError`, so a user fixes all
mistakes in one edit. On error nothing else happens. Fields rayscale does not
model are kept: real KubeRay manifests carry many (service types, volumes,
probes...) that rayscale leaves to Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, field_validator

from rayscale.api import KubeModel, RayCluster, SpecError, derive_ray_resources, describe
from rayscale.api.base import Quantity
from rayscale.api.errors import path_of, spec_error
from rayscale.api.pod import Container
from rayscale.api.raycluster import RayStartParams, check_params
from rayscale.api.resources import check_node_resources


def parse_cluster_spec(doc: Any) -> RayCluster:
    """Validate a RayCluster document and return its model.

    Raises :class:`SpecError` listing every problem found.
    """
    if not isinstance(doc, Mapping):
        raise SpecError(
            [f"document: must be a mapping (a RayCluster manifest), got {describe(doc)}"]
        )
    try:
        return RayCluster.model_validate(dict(doc))
    except ValidationError as exc:
        raise spec_error(exc) from None


class _ResourceSources(KubeModel):
    ray_start_params: RayStartParams = Field(default_factory=dict)
    container: Container = Field(default_factory=lambda: Container())
    resources: dict[str, Quantity] = Field(default_factory=dict)

    _params = field_validator("ray_start_params")(check_params)


def ray_resources(
    ray_start_params: Mapping[str, Any],
    container: Mapping[str, Any],
    group_resources: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """The Ray resources of one node, from a group's documents (not a whole cluster).

    ``container`` is the Ray container, ``group_resources`` the group's
    optional top-level ``resources`` map. Raises :class:`SpecError` with paths
    relative to the arguments (``rayStartParams.num-cpus``,
    ``container.resources.limits.cpu``).
    """
    document = {
        "rayStartParams": dict(ray_start_params),
        "container": dict(container),
        "resources": dict(group_resources or {}),
    }
    try:
        sources = _ResourceSources.model_validate(document)
    except ValidationError as exc:
        raise spec_error(exc, under_spec=False) from None
    too_large = check_node_resources(sources.container, sources.resources, ("container",))
    if too_large:
        raise SpecError(
            f"{path_of(loc, under_spec=False)}: {message}" for loc, message, _ in too_large
        )
    return derive_ray_resources(sources.ray_start_params, sources.container, sources.resources)
