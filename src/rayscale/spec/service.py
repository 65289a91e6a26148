"""Ray Serve configs and RayService files into validated models, for local mode.

A Serve config (:class:`rayscale.api.serveconfig.ServeConfig`) comes from a
Serve config file (what ``serve deploy`` takes) or from a KubeRay RayService
manifest's ``serveConfigV2`` (a YAML string); :func:`load_serve_config`
takes either. :func:`load_service` reads a RayService file whole: the model,
its Serve config and the RayCluster local mode starts for it
(:func:`service_cluster`: ``spec.rayClusterConfig`` under the RayService's
own name, so ``rayscale status NAME`` and ``rayscale down NAME`` use the
name in the file). Every problem is reported at once, each naming its field
(``serveConfigV2.applications[0].import_path: required``); nothing starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rayscale.api import RayCluster, RayService, SpecError, describe
from rayscale.api.errors import spec_error
from rayscale.api.raycluster import API_VERSIONS
from rayscale.api.serveconfig import ServeConfig
from rayscale.labels import RAY_API_VERSION

from .loader import parse_document, read_document
from .parse import parse_cluster_spec

SERVICE_KIND = "RayService"
SERVE_CONFIG_FIELD = "serveConfigV2"


@dataclass(frozen=True)
class ServiceSpec:
    """A RayService file, validated: the resource, its Serve config and its cluster."""

    service: RayService
    serve: ServeConfig
    cluster: RayCluster

    @property
    def name(self) -> str:
        return self.cluster.name


def is_service(doc: Mapping[str, Any]) -> bool:
    return doc.get("kind") == SERVICE_KIND


def parse_serve_config(doc: Any, at: str = "") -> ServeConfig:
    """A Serve config document; ``at`` prefixes each problem's path (``serveConfigV2.``)."""
    if not isinstance(doc, Mapping):
        raise SpecError([f"{at.rstrip('.') or 'document'}: must be a mapping (a Serve "
                         f"config with applications), got {describe(doc)}"])
    try:
        return ServeConfig.model_validate(dict(doc))
    except ValidationError as exc:
        raise SpecError(f"{at}{line}" for line in spec_error(exc, under_spec=False).errors
                        ) from None


def load_serve_config(path: Path) -> ServeConfig:
    """A Serve config file, or a RayService file's ``serveConfigV2``."""
    doc = read_document(path, kind="Serve config")
    if is_service(doc):
        return parse_service(doc).serve
    return parse_serve_config(doc)


def load_service(path: Path) -> ServiceSpec:
    return parse_service(read_document(path, kind=SERVICE_KIND))


def parse_service(doc: Mapping[str, Any]) -> ServiceSpec:
    """A RayService document: every problem of the resource and of its Serve config."""
    problems = _header_problems(doc)
    service: RayService | None = None
    try:
        service = RayService.model_validate(dict(doc))
    except ValidationError as exc:
        problems += spec_error(exc).errors
    serve: ServeConfig | None = None
    text = (doc.get("spec") or {}).get(SERVE_CONFIG_FIELD) if isinstance(
        doc.get("spec"), Mapping) else None
    if text is None:
        problems.append(f"{SERVE_CONFIG_FIELD}: required (the Serve applications to run)")
    elif isinstance(text, str):
        try:
            serve = parse_serve_config(parse_document(text, SERVE_CONFIG_FIELD, "Serve config"),
                                       at=f"{SERVE_CONFIG_FIELD}.")
        except SpecError as exc:
            problems += exc.errors
    if service is not None and service.spec.suspend:
        problems.append("suspend: a suspended RayService runs nothing; local mode starts "
                        "nothing for it (set suspend: false)")
    cluster: RayCluster | None = None
    if service is not None:
        try:
            cluster = service_cluster(service)
        except SpecError as exc:
            problems += exc.errors
    if problems:
        raise SpecError(problems)
    assert service is not None and serve is not None and cluster is not None
    return ServiceSpec(service, serve, cluster)


def service_cluster(service: RayService) -> RayCluster:
    """The RayCluster local mode runs for ``service``: its ``rayClusterConfig``, its name."""
    return parse_cluster_spec({
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": {"name": service.metadata.name, "labels": {
            "ray.io/originated-from-crd": SERVICE_KIND,
            "ray.io/originated-from-cr-name": service.metadata.name,
        }},
        "spec": service.spec.ray_cluster_config.to_manifest(),
    })


def _header_problems(doc: Mapping[str, Any]) -> list[str]:
    problems = []
    version, kind = doc.get("apiVersion"), doc.get("kind")
    if version is None:
        problems.append(f"apiVersion: required (expected {API_VERSIONS[0]!r})")
    elif version not in API_VERSIONS:
        problems.append(f"apiVersion: must be {API_VERSIONS[0]!r}, got {describe(version)}")
    if kind != SERVICE_KIND:
        problems.append(f"kind: must be {SERVICE_KIND!r}, got {describe(kind)}")
    return problems
