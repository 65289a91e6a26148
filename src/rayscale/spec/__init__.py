"""rayscale.spec: RayCluster files and documents into validated :mod:`rayscale.api` models.

Users keep writing the RayCluster YAML they already write for KubeRay;
:func:`load_cluster_spec` / :func:`parse_cluster_spec` validate it (every
problem reported at once, each naming its field path) and return a frozen
:class:`rayscale.api.RayCluster`.

RayJob files (local mode's ``rayscale job submit``) go through
:func:`load_job_spec` / :func:`parse_job_spec` the same way, RayService files
and Ray Serve configs (``rayscale up``, ``rayscale serve deploy``) through
:func:`load_service` / :func:`load_serve_config`.

Modules: ``parse`` (document -> model), ``loader`` (file -> document),
``job`` (RayJob file -> model, and what Ray's job API takes) and ``service``
(RayService file -> its model, Serve config and cluster).
"""

from rayscale.api import SpecError

from .job import JobSubmission, job_submission, load_job_spec, parse_job_spec
from .loader import load_cluster_spec, read_document
from .parse import parse_cluster_spec, ray_resources
from .service import (
    ServiceSpec,
    is_service,
    load_serve_config,
    load_service,
    parse_serve_config,
    parse_service,
)

__all__ = [
    "JobSubmission",
    "ServiceSpec",
    "SpecError",
    "is_service",
    "job_submission",
    "load_cluster_spec",
    "load_job_spec",
    "load_serve_config",
    "load_service",
    "parse_cluster_spec",
    "parse_job_spec",
    "parse_serve_config",
    "parse_service",
    "ray_resources",
    "read_document",
]
