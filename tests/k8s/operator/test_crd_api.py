"""The generated CRDs on the real kube-apiserver (no operator needed).

- every kind's CRD is accepted (structural schema, CEL rules compile: server-side
  dry run), and the installed CRDs (deploy/crds: RayCluster, RayJob, RayService, RayCronJob)
  are stored as generated, nothing lost;
- every example under examples/ (RayClusters, a RayJob, a RayService and its app's
  ConfigMap) is accepted as its kind;
- what the schema keeps and prunes: pod templates and group specs keep fields
  rayscale does not model, an undeclared spec field is pruned.
Bad manifests the API refuses: test_operator.py::test_bad_manifests_are_rejected_by_the_api.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.types import PatchType

from rayscale.api.crd import MODELS
from rayscale.api.crd import crd as generated  # `crd` is the fixture installing it
from rayscale.cli.crd_cmd import DEPLOYED_KINDS
from tests.k8s.operator.conftest import ROOT, RayCluster, manifest

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
RayService = create_namespaced_resource("ray.io", "v1", "RayService", "rayservices")


def _untyped(client: Client) -> Any:
    """lightkube's overloads do not cover generic resources: call it untyped."""
    return client


@pytest.mark.parametrize("kind", list(MODELS))
def test_every_kinds_crd_is_accepted(kube: Client, kind: str) -> None:
    _untyped(kube).apply(codecs.from_dict(generated(kind)), field_manager="rayscale-test",
                         force=True, dry_run=True)


@pytest.mark.parametrize("kind", DEPLOYED_KINDS)
def test_installed_crd_is_stored_as_generated(kube: Client, crd: None, kind: str) -> None:
    doc = generated(kind)
    stored = kube.get(CustomResourceDefinition, doc["metadata"]["name"]).to_dict()
    (version,) = stored["spec"]["versions"]
    (want,) = doc["spec"]["versions"]
    assert version["schema"] == want["schema"]
    assert version["additionalPrinterColumns"] == want["additionalPrinterColumns"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(kube: Client, ns: str, crd: None, path: Path) -> None:
    # the crd fixture installs the ray.io kinds; a RayService example has a ConfigMap too
    kinds = {"RayCluster": RayCluster, "RayJob": RayJob, "RayService": RayService}
    for doc in yaml.safe_load_all(path.read_text()):
        obj = kinds[doc["kind"]].from_dict(doc) if doc["kind"] in kinds \
            else codecs.from_dict(doc)
        _untyped(kube).create(obj, namespace=ns, dry_run=True)


def test_templates_and_groups_keep_unmodelled_fields_spec_prunes_undeclared(
    kube: Client, ns: str, crd: None
) -> None:
    doc = manifest("kept")
    doc["spec"]["notAField"] = "pruned"
    group = doc["spec"]["workerGroupSpecs"][0]
    group["fromNewerKubeRay"] = {"x": 1}
    pod = group["template"]["spec"]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    pod["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}}
    doc["spec"]["headGroupSpec"]["template"]["metadata"] = {"annotations": {"a": "b"}}
    created = _untyped(kube).create(RayCluster.from_dict(doc), namespace=ns, dry_run=True)
    spec = created["spec"]
    assert "notAField" not in spec
    stored = spec["workerGroupSpecs"][0]
    assert stored["fromNewerKubeRay"] == {"x": 1}
    assert stored["template"]["spec"]["volumes"] == pod["volumes"]
    assert stored["template"]["spec"]["containers"][0]["readinessProbe"] == {
        "exec": {"command": ["true"]}}
    assert spec["headGroupSpec"]["template"]["metadata"] == {"annotations": {"a": "b"}}


@pytest.mark.parametrize(("field", "value", "named"), [
    ("submissionMode", "ShellMode", "spec.submissionMode"),
    ("backoffLimit", "twice", "spec.backoffLimit"),
    ("shutdownAfterJobFinishes", "yes please", "spec.shutdownAfterJobFinishes"),
])
def test_a_bad_rayjob_is_refused_by_the_api_naming_the_field(
    kube: Client, ns: str, crd: None, field: str, value: Any, named: str
) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "rayjob.yaml").read_text())
    doc["spec"][field] = value
    with pytest.raises(ApiError) as refused:
        _untyped(kube).create(RayJob.from_dict(doc), namespace=ns, dry_run=True)
    assert refused.value.status.code == 422
    assert named in (refused.value.status.message or ""), refused.value.status.message


def test_managed_by_is_kuberays_or_multikueues_and_immutable(
    kube: Client, ns: str, crd: None
) -> None:
    doc = manifest("managed", replicas=0)
    doc["spec"]["managedBy"] = "controller.example.com/mine"
    with pytest.raises(ApiError) as refused:
        _untyped(kube).create(RayCluster.from_dict(doc), namespace=ns, dry_run=True)
    assert "managedBy" in (refused.value.status.message or ""), refused.value.status.message
    doc["spec"]["managedBy"] = "ray.io/kuberay-operator"
    _untyped(kube).create(RayCluster.from_dict(doc), namespace=ns)
    with pytest.raises(ApiError) as changed:
        _untyped(kube).patch(RayCluster, "managed", {"spec": {
            "managedBy": "kueue.x-k8s.io/multikueue"}}, namespace=ns,
            patch_type=PatchType.MERGE)
    assert "immutable" in (changed.value.status.message or ""), changed.value.status.message


def test_a_cluster_and_a_job_managed_by_multikueue_are_left_alone(
    kube: Client, ns: str, operator: Any
) -> None:
    """As KubeRay: MultiKueue runs them on a worker cluster; here they get no pods, no
    status and no submitter."""
    import time

    from lightkube.resources.batch_v1 import Job
    from lightkube.resources.core_v1 import Pod

    cluster = manifest("remote", replicas=1)
    cluster["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    _untyped(kube).create(RayCluster.from_dict(cluster), namespace=ns)
    job = yaml.safe_load((ROOT / "examples" / "rayjob.yaml").read_text())
    job["metadata"]["name"] = "remote-job"
    job["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    _untyped(kube).create(RayJob.from_dict(job), namespace=ns)
    local = manifest("local", replicas=0)  # a cluster of ours, as the proof the operator runs
    _untyped(kube).create(RayCluster.from_dict(local), namespace=ns)
    deadline = time.monotonic() + 60
    while not (_untyped(kube).get(RayCluster, "local", namespace=ns).to_dict()
               .get("status") or {}).get("observedGeneration"):
        assert time.monotonic() < deadline, "the operator never reconciled the local cluster"
        time.sleep(0.5)
    time.sleep(3)  # what a reconcile of the others would have done by now
    assert not list(kube.list(Pod, namespace=ns, labels={"ray.io/cluster": "remote"}))
    assert not (_untyped(kube).get(RayCluster, "remote", namespace=ns).to_dict()
                .get("status"))
    assert not (_untyped(kube).get(RayJob, "remote-job", namespace=ns).to_dict()
                .get("status"))
    assert not list(kube.list(Job, namespace=ns))
