"""A local RayJob's cluster: KubeRay's naming, the same cluster spec, fields not acted on."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rayscale.local.jobs import ignored_fields, job_cluster
from rayscale.spec import load_job_spec, parse_cluster_spec, parse_job_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rayjob.yaml"


def test_the_cluster_is_the_jobs_spec_under_kuberays_name() -> None:
    job = load_job_spec(EXAMPLE)
    cluster = job_cluster(job)
    assert re.fullmatch(r"rayjob-sample-[bcdfghjklmnpqrstvwxz2456789]{5}", cluster.name)
    assert cluster.metadata.labels["ray.io/originated-from-cr-name"] == "rayjob-sample"
    assert job.spec.ray_cluster_spec is not None
    assert cluster.spec.to_manifest() == job.spec.ray_cluster_spec.to_manifest()
    # what the autoscaler reads back (the manifest written for it) is the same cluster
    again = parse_cluster_spec(yaml.safe_load(yaml.safe_dump(cluster.to_manifest())))
    assert again == cluster
    assert job_cluster(job).name != cluster.name  # each run its own


def test_fields_local_mode_does_not_act_on_are_named() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert ignored_fields(parse_job_spec(doc).spec) == []
    doc["spec"].update({"backoffLimit": 2, "deletionStrategy": {"onSuccess": {
        "policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteNone"}}})
    assert ignored_fields(parse_job_spec(doc).spec) == ["backoffLimit", "deletionStrategy"]
