"""A RayJob file or document into a validated :class:`rayscale.api.RayJob`, for local mode.

The model (:mod:`rayscale.api.rayjob`) checks types and bounds; this adds
what KubeRay's ``ValidateRayJobMetadata`` / ``ValidateRayJobSpec`` refuse
before anything starts (a name that is no DNS-1035 label of at most 47
characters, neither ``rayClusterSpec`` nor ``clusterSelector``, invalid
``runtimeEnvYAML``, ``suspend`` without ``shutdownAfterJobFinishes``, a TTL
without shutdown) and what local mode cannot do (an empty entrypoint,
``InteractiveMode``, a ``clusterSelector`` other than ``ray.io/cluster``).
Every problem is reported at once, each naming its field, as for clusters.

:func:`job_submission` turns the spec's strings (``runtimeEnvYAML``,
``entrypointResources``) into what Ray's job API takes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rayscale.api import RayJob, SpecError, describe
from rayscale.api.errors import spec_error
from rayscale.api.raycluster import API_VERSIONS, DNS1035_LABEL

from .loader import read_document

#: KubeRay's MaxRayJobNameLength: the cluster's name adds a 6-character suffix.
MAX_JOB_NAME_LENGTH = 47
#: The one clusterSelector key local mode understands (KubeRay's cluster name label).
CLUSTER_LABEL = "ray.io/cluster"


@dataclass(frozen=True)
class JobSubmission:
    """What Ray's ``JobSubmissionClient.submit_job`` gets, parsed from the spec's strings."""

    entrypoint: str
    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_resources: dict[str, float] | None = None


def load_job_spec(path: str | Path) -> RayJob:
    """Load and validate the RayJob manifest at ``path`` (SpecError lists every problem)."""
    return parse_job_spec(read_document(Path(path), kind="RayJob"))


def parse_job_spec(doc: Any) -> RayJob:
    if not isinstance(doc, Mapping):
        raise SpecError([f"document: must be a mapping (a RayJob manifest), got {describe(doc)}"])
    header = _header_problems(doc)
    try:
        job = RayJob.model_validate(dict(doc))
    except ValidationError as exc:
        raise SpecError([*header, *spec_error(exc).errors]) from None
    problems = [*header, *_job_problems(job)]
    if problems:
        raise SpecError(problems)
    return job


def _header_problems(doc: Mapping[str, Any]) -> list[str]:
    problems = []
    version, kind = doc.get("apiVersion"), doc.get("kind")
    if version is None:
        problems.append(f"apiVersion: required (expected {API_VERSIONS[0]!r})")
    elif version not in API_VERSIONS:
        problems.append(f"apiVersion: must be {API_VERSIONS[0]!r}, got {describe(version)}")
    if kind is None:
        problems.append("kind: required (expected 'RayJob')")
    elif kind != "RayJob":
        problems.append(f"kind: must be 'RayJob', got {describe(kind)}")
    return problems


def _job_problems(job: RayJob) -> list[str]:
    spec = job.spec
    problems = []
    name = job.metadata.name
    if not name:
        problems.append("metadata.name: required")
    elif len(name) > MAX_JOB_NAME_LENGTH or not DNS1035_LABEL.fullmatch(name):
        problems.append(
            f"metadata.name: must be a DNS-1035 label of at most {MAX_JOB_NAME_LENGTH} "
            f"characters (lower-case letters, digits and '-', starting with a letter), "
            f"got {name!r}")
    if not (spec.entrypoint or "").strip():
        problems.append("entrypoint: required (the command Ray runs as the job)")
    if spec.submission_mode == "InteractiveMode":
        problems.append("submissionMode: InteractiveMode is not supported in local mode "
                        "(give an entrypoint and use K8sJobMode or HTTPMode)")
    if spec.ray_cluster_spec is None and not spec.cluster_selector:
        problems.append("rayClusterSpec: one of rayClusterSpec or clusterSelector must be set")
    if spec.cluster_selector and set(spec.cluster_selector) != {CLUSTER_LABEL}:
        problems.append(f"clusterSelector: local mode selects a cluster by name only "
                        f"({CLUSTER_LABEL}: NAME), got keys {sorted(spec.cluster_selector)}")
    if spec.suspend and not spec.shutdown_after_job_finishes:
        problems.append("suspend: a RayJob with shutdownAfterJobFinishes false cannot be "
                        "suspended (as in KubeRay)")
    if spec.suspend and spec.cluster_selector:
        problems.append("suspend: the clusterSelector mode does not support suspend "
                        "(as in KubeRay)")
    if spec.ttl_seconds_after_finished > 0 and not spec.shutdown_after_job_finishes:
        problems.append("ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true "
                        "(as in KubeRay)")
    problems += _runtime_env(spec.runtime_env_yaml)[1]
    problems += _resources(spec.entrypoint_resources)[1]
    return problems


def _runtime_env(text: str | None) -> tuple[dict[str, Any] | None, list[str]]:
    if text is None or not text.strip():
        return None, []
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        return None, [f"runtimeEnvYAML: invalid YAML{at}: "
                      f"{getattr(exc, 'problem', None) or exc}"]
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [f"runtimeEnvYAML: must be a mapping (a Ray runtime_env), "
                      f"got {describe(value)}"]
    return value, []


def _resources(text: str | None) -> tuple[dict[str, float] | None, list[str]]:
    """``entrypointResources``: a JSON object of resource name to amount, as KubeRay takes it."""
    if text is None or not text.strip():
        return None, []
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, [f"entrypointResources: invalid JSON: {exc}"]
    if not isinstance(value, dict):
        return None, [f"entrypointResources: must be a JSON object, got {describe(value)}"]
    out: dict[str, float] = {}
    problems = []
    for key, amount in value.items():
        if (isinstance(amount, bool) or not isinstance(amount, int | float)
                or not math.isfinite(amount) or amount < 0):
            problems.append(f"entrypointResources[{key}]: must be a number >= 0, "
                            f"got {describe(amount)}")
        else:
            out[key] = float(amount)
    return (out if not problems else None), problems


def job_submission(job: RayJob, entrypoint: str | None = None) -> JobSubmission:
    """The job's submission for Ray (``job`` must come from :func:`parse_job_spec`).

    ``entrypoint`` replaces the spec's (local mode prefixes the directory to run in).
    """
    spec = job.spec
    return JobSubmission(
        entrypoint=entrypoint if entrypoint is not None else spec.entrypoint or "",
        runtime_env=_runtime_env(spec.runtime_env_yaml)[0],
        metadata=dict(spec.metadata),
        entrypoint_num_cpus=spec.entrypoint_num_cpus,
        entrypoint_num_gpus=spec.entrypoint_num_gpus,
        entrypoint_resources=_resources(spec.entrypoint_resources)[0],
    )
