"""RayJob files for local mode: KubeRay's checks and local mode's, every problem named by field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale.spec import SpecError, job_submission, load_job_spec, parse_job_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rayjob.yaml"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_job_spec(doc)
    return caught.value.errors


def test_the_example_loads_and_its_cluster_autoscales() -> None:
    job = load_job_spec(EXAMPLE)
    assert job.metadata.name == "rayjob-sample"
    assert job.spec.shutdown_after_job_finishes
    cluster = job.spec.ray_cluster_spec
    assert cluster is not None and cluster.enable_in_tree_autoscaling
    group = cluster.worker_group_specs[0]
    assert (group.min_replicas, group.max_replicas, group.ray_resources["CPU"]) == (0, 2, 1)
    assert cluster.head_group_spec.ray_resources.get("CPU", 0) == 0


def test_submission_fields_are_parsed_for_rays_job_api() -> None:
    doc = _doc()
    doc["spec"].update({
        "runtimeEnvYAML": "env_vars:\n  A: b\npip: [requests]\n",
        "metadata": {"team": "x"},
        "entrypointNumCpus": 0.5,
        "entrypointResources": '{"custom": 2}',
        "jobId": "fixed-id",
    })
    submission = job_submission(parse_job_spec(doc))
    assert submission.runtime_env == {"env_vars": {"A": "b"}, "pip": ["requests"]}
    assert submission.metadata == {"team": "x"}
    assert submission.entrypoint_num_cpus == 0.5
    assert submission.entrypoint_resources == {"custom": 2.0}


@pytest.mark.parametrize(("change", "field"), [
    ({"metadata": {"name": "Bad_Name"}}, "metadata.name"),
    ({"metadata": {"name": "a" * 48}}, "metadata.name"),
    ({"kind": "RayCluster"}, "kind"),
    ({"spec.entrypoint": ""}, "entrypoint"),
    ({"spec.rayClusterSpec": None}, "rayClusterSpec"),
    ({"spec.runtimeEnvYAML": "pip: [a"}, "runtimeEnvYAML"),
    ({"spec.runtimeEnvYAML": "- a list"}, "runtimeEnvYAML"),
    ({"spec.entrypointResources": "not json"}, "entrypointResources"),
    ({"spec.entrypointResources": '{"x": -1}'}, "entrypointResources[x]"),
    ({"spec.clusterSelector": {"team": "a"}}, "clusterSelector"),
    ({"spec.submissionMode": "InteractiveMode"}, "submissionMode"),
    ({"spec.shutdownAfterJobFinishes": False, "spec.ttlSecondsAfterFinished": 5},
     "ttlSecondsAfterFinished"),
    ({"spec.suspend": True, "spec.shutdownAfterJobFinishes": False}, "suspend"),
    ({"spec.activeDeadlineSeconds": 0}, "activeDeadlineSeconds"),
    ({"spec.rayClusterSpec.workerGroupSpecs[0].maxReplicas": -1},
     "rayClusterSpec.workerGroupSpecs[0].maxReplicas"),
])
def test_a_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    doc = copy.deepcopy(_doc())
    for key, value in change.items():
        if not key.startswith("spec."):
            doc[key] = value
            continue
        target = doc["spec"]
        parts = key.removeprefix("spec.").replace("[0]", ".0").split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            target.pop(parts[-1])
        else:
            target[parts[-1]] = value
    problems = _problems(doc)
    assert any(p.startswith(f"{field}:") for p in problems), problems


def test_cluster_selector_alone_is_enough() -> None:
    doc = _doc()
    del doc["spec"]["rayClusterSpec"]
    doc["spec"]["clusterSelector"] = {"ray.io/cluster": "mine"}
    doc["spec"]["shutdownAfterJobFinishes"] = False
    assert parse_job_spec(doc).spec.cluster_selector == {"ray.io/cluster": "mine"}


def test_every_problem_at_once(tmp_path: Path) -> None:
    doc = _doc()
    doc["metadata"]["name"] = "X"
    doc["spec"]["entrypoint"] = " "
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as caught:
        load_job_spec(path)
    assert [p.split(":")[0] for p in caught.value.errors] == ["metadata.name", "entrypoint"]
