"""rayscale.spec: RayCluster files and documents into validated :mod:`rayscale.api` models.

Users keep writing the RayCluster YAML they already write for KubeRay;
:func:`load_cluster_spec` / :func:`parse_cluster_spec` validate it (every
problem reported at once, each naming its field path) and return a frozen
:class:`rayscale.api.RayCluster`.

RayJob files (local mode's ``rayscale job submit``) go through
:func:`load_job_spec` / :func:`parse_job_spec` the same way.

Modules: ``parse`` (document -> model), ``loader`` (file -> document) and
``job`` (RayJob file -> model, and what Ray's job API takes).
"""

from rayscale.api import SpecError

from .job import JobSubmission, job_submission, load_job_spec, parse_job_spec
from .loader import load_cluster_spec
from .parse import parse_cluster_spec, ray_resources

__all__ = [
    "JobSubmission",
    "SpecError",
    "job_submission",
    "load_cluster_spec",
    "load_job_spec",
    "parse_cluster_spec",
    "parse_job_spec",
    "ray_resources",
]
