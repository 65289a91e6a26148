"""The cluster chart (deploy/helm/ray-cluster) with the seeds' values files.

The seeds (ACK's ack-ray-cluster docs, /work/shared/seeds/000 and 001) install a
RayCluster with ``helm install ${RAY_CLUSTER_NAME} ... -f values.yaml``; their
values.yaml files are in ``data/ray-cluster-chart`` verbatim (names substituted:
``RAY_CLUSTER_NAME=myfirst-ray-cluster``).

- ``helm lint`` / ``helm template`` render them (and seed 001's ``--set
  armsPrometheus.enable=true --set gcsFaultTolerance.enable=true``, KubeRay's own
  value forms) into a RayCluster the API models accept (``parse_cluster_spec``);
- ``helm install`` of seed 000's values on the dev cluster makes a RayCluster our
  operator runs: the seed's 2-task job makes 2 worker pods, both on the elastic
  (virtual-kubelet) node.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Pod

from rayscale.devcluster import DevCluster
from rayscale.spec import parse_cluster_spec
from tests.devtools import VNodeProcess, wait_for
from tests.k8s.operator.conftest import NO_DRAIN, ROOT, OperatorProcess, pods, run_job
from tests.k8s.operator.test_helm_rbac import (
    HELM_BUILD_TIMEOUT_S,
    _helm,
    _helm_dir,
    _helm_ok,
    helm,
)

__all__ = ["helm"]  # the fixture, shared with test_helm_rbac

if not _helm_ok(_helm_dir() / "bin" / "helm"):  # the first test builds helm: allow for it
    pytestmark = pytest.mark.timeout(HELM_BUILD_TIMEOUT_S + 600)

CHART = ROOT / "deploy" / "helm" / "ray-cluster"
DATA = Path(__file__).parent / "data" / "ray-cluster-chart"
RELEASE = "myfirst-ray-cluster"  # the seeds' ${RAY_CLUSTER_NAME}
SEED_001_SETS = ("armsPrometheus.enable=true", "gcsFaultTolerance.enable=true")


def _render(helm: Path, *args: str, namespace: str = "raycluster") -> dict[str, Any]:
    out = _helm(helm, "template", RELEASE, str(CHART), "--namespace", namespace, *args)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert [d["kind"] for d in docs] == ["RayCluster"]
    return dict(docs[0])


def _values(name: str) -> list[str]:
    return ["-f", str(DATA / name)]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _scrape(pod: Pod) -> str:
    """``http://<pod IP>:<prometheus.io/port>/metrics`` until it serves Ray's metrics."""
    assert pod.metadata is not None and pod.status is not None
    annotations = pod.metadata.annotations or {}
    assert annotations.get("prometheus.io/scrape") == "true", annotations
    url = f"http://{pod.status.podIP}:{annotations['prometheus.io/port']}/metrics"

    def serves() -> bool:
        with urllib.request.urlopen(url, timeout=5) as response:  # OSError: retried
            return response.status == 200 and "ray_" in response.read().decode()

    wait_for(serves, 90, f"Ray's metrics at {url}")
    return url


def _elastic(template: dict[str, Any]) -> bool:
    spec = template["spec"]
    tolerations = spec.get("tolerations") or []
    return (spec.get("nodeSelector") == {"type": "virtual-kubelet"}
            and any(t.get("key") == "virtual-kubelet.io/provider" for t in tolerations))


def test_seed_values_render_a_cluster_the_models_accept(helm: Path) -> None:
    for args in ([], _values("seed-000-values.yaml"), _values("seed-001-values.yaml"),
                 _values("seed-000-values.verbatim.yaml"),
                 _values("seed-001-values.yaml") + _sets(*SEED_001_SETS)):
        lint = _helm(helm, "lint", str(CHART), "--strict", *args)
        assert lint.returncode == 0 and "[ERROR]" not in lint.stdout, lint.stdout + lint.stderr
        doc = _render(helm, *args)
        cluster = parse_cluster_spec(doc)
        # named after the release, as ack-ray-cluster names it (pods myfirst-ray-cluster-head-*)
        assert cluster.name == RELEASE
        assert cluster.spec.enable_in_tree_autoscaling
        assert cluster.head.ray_start_params["num-cpus"] == "0"
        [group] = cluster.spec.worker_group_specs
        assert group.group_name == "workergroup"
        assert (group.min_replicas, group.max_replicas) == (0, 10)
        assert group.ray_resources.get("CPU") == 1

    # the seeds' worker labels: alibabacloud.com/eci on the pod, and where it must go
    for name in ("seed-000-values.yaml", "seed-001-values.yaml"):
        doc = _render(helm, *_values(name))
        worker = doc["spec"]["workerGroupSpecs"][0]["template"]
        assert worker["metadata"]["labels"]["alibabacloud.com/eci"] == "true"
        assert _elastic(worker)
        assert not _elastic(doc["spec"]["headGroupSpec"]["template"])
    # the truncated copy in seed 000 (top-level groupName/labels) changes nothing
    verbatim = _render(helm, *_values("seed-000-values.verbatim.yaml"))
    assert verbatim == _render(helm)


def test_seed_001_switches_fault_tolerance_and_monitoring(helm: Path) -> None:
    doc = _render(helm, *_values("seed-001-values.yaml"), *_sets(*SEED_001_SETS))
    cluster = parse_cluster_spec(doc)
    # ack-ray-cluster's form: the annotation, and the Secret named after the release
    assert doc["metadata"]["annotations"]["ray.io/ft-enabled"] == "true"
    head = doc["spec"]["headGroupSpec"]
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    secret = f"{RELEASE}-raycluster-redis"
    assert env["RAY_REDIS_ADDRESS"]["valueFrom"] == {
        "secretKeyRef": {"name": secret, "key": "address"}}
    assert env["REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": secret, "key": "password"}}
    assert head["rayStartParams"]["redis-password"] == "$REDIS_PASSWORD"
    assert cluster.spec.gcs_fault_tolerance_options is None
    # monitoring: scrape annotations and Ray's metrics on the annotated port, every Ray pod
    for group in (head, doc["spec"]["workerGroupSpecs"][0]):
        annotations = group["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == group["rayStartParams"][
            "metrics-export-port"] == "8080"

    off = _render(helm, *_values("seed-001-values.yaml"))
    assert "annotations" not in off["metadata"]
    assert "env" not in off["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "annotations" not in off["spec"]["headGroupSpec"]["template"]["metadata"]


def test_kuberay_value_forms(helm: Path) -> None:
    """KubeRay's names keep KubeRay's meaning: gcsFaultTolerance.enabled with
    redisAddress, additionalWorkerGroups, nameOverride, common.containerEnv."""
    doc = _render(helm, *_sets(
        "gcsFaultTolerance.enabled=true", "gcsFaultTolerance.redisAddress=redis:6379",
        "gcsFaultTolerance.redisPassword.valueFrom.secretKeyRef.name=redis-password-secret",
        "gcsFaultTolerance.redisPassword.valueFrom.secretKeyRef.key=password",
        # a label value --set makes a boolean is quoted (KubeRay's default group name,
        # smallGroup, is not a valid DNS-1123 label: pod names carry it)
        "additionalWorkerGroups.small-group.labels.alibabacloud\\.com/eci=true",
        "nameOverride=kuberay", "common.containerEnv[0].name=A", "common.containerEnv[0].value=x"))
    cluster = parse_cluster_spec(doc)
    assert cluster.name == f"{RELEASE}-kuberay"
    options = cluster.spec.gcs_fault_tolerance_options
    assert options is not None and options.redis_address == "redis:6379"
    assert "annotations" not in doc["metadata"]
    names = [g.group_name for g in cluster.spec.worker_group_specs]
    assert names == ["workergroup", "small-group"]
    small = doc["spec"]["workerGroupSpecs"][1]["template"]
    assert _elastic(small)
    assert small["spec"]["containers"][0]["env"] == [{"name": "A", "value": "x"}]


def test_helm_install_seed_000_scales_workers_on_the_elastic_node(
    helm: Path, dev_cluster: DevCluster, kube: Client, operator: OperatorProcess,
    vnode: VNodeProcess, ns: str,
) -> None:
    """The seed's step: install with its values.yaml, run its 2-task job (each task 1
    CPU; the head has 0): 2 worker pods, both on the virtual node. With seed 001's
    monitoring switch on, every pod's Ray metrics answer where its scrape annotation
    says (pods share one network here: a fixed 8080 would collide)."""
    kubeconfig = ["--kubeconfig", str(dev_cluster.kubeconfig)]
    install = _helm(helm, "install", RELEASE, str(CHART), "--namespace", ns, *kubeconfig,
                    *_values("seed-000-values.yaml"), *_sets(SEED_001_SETS[0]),
                    "--set-json", f"common.containerEnv={json.dumps([NO_DRAIN])}")
    assert install.returncode == 0, install.stderr
    try:
        head = wait_for(lambda: [p for p in pods(kube, ns, RELEASE, "head")
                                 if p.status and p.status.phase == "Running"
                                 and p.status.podIP], 120, "the head pod Running")[0]
        assert head.spec is not None and head.status is not None
        assert head.spec.nodeName is not None and "regular" in head.spec.nodeName
        logs = run_job(kube, ns, RELEASE, str(head.status.podIP), """
            import socket, time

            @ray.remote(num_cpus=1)
            def get_task_hostname():
                time.sleep(5)
                return socket.gethostbyname(socket.gethostname())

            object_refs = [get_task_hostname.remote() for _ in range(2)]
            print("hosts:", sorted(set(ray.get(object_refs))))
        """, timeout_s=300)
        workers = pods(kube, ns, RELEASE, "worker")
        elastic = f"{vnode.config.name}-elastic-0"
        assert [(p.spec.nodeName if p.spec else None) for p in workers] == [elastic, elastic]
        hosts = [line for line in logs.splitlines() if line.startswith("hosts:")]
        assert hosts and hosts[-1].count("127.") == 2, logs[-2000:]
        scraped = {_scrape(p) for p in [head, *workers]}
        assert len(scraped) == 3, scraped  # three pods, three ports, all answering
    finally:
        _helm(helm, "uninstall", RELEASE, "--namespace", ns, *kubeconfig)
