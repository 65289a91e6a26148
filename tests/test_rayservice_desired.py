"""What a RayService owns (rayservice_desired): its clusters, their hash, its Services, the
Serve config it PUTs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale.operator.desired import PodSettings, head_pod, worker_pod
from rayscale.operator.probes import SERVE_HEALTH_PATH
from rayscale.operator.rayservice_decide import validate
from rayscale.operator.rayservice_desired import (
    HASH_ANNOTATION,
    NUM_WORKER_GROUPS_ANNOTATION,
    OPERATOR_VERSION,
    VERSION_ANNOTATION,
    parse_serve_config,
    ray_cluster,
    rayservice_head_service,
    serve_config_body,
    serve_port,
    serve_service,
    serve_service_name_of,
    spec_hash,
)
from rayscale.spec import parse_cluster_spec


def body(**spec: Any) -> dict[str, Any]:
    head = {"name": "ray-head", "image": "rayproject/ray:2.60.0",
            "ports": [{"name": "gcs-server", "containerPort": 6379},
                      {"name": "dashboard", "containerPort": 8265},
                      {"name": "serve", "containerPort": 8000}]}
    worker = {"name": "ray-worker", "image": "rayproject/ray:2.60.0",
              "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "svc", "namespace": "ns", "uid": "u-1",
                     "labels": {"team": "a"}, "annotations": {"note": "x"}},
        "spec": {
            "serveConfigV2": "applications:\n- name: a\n  import_path: m:app\n",
            "rayClusterConfig": {
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {
                    "containers": [head]}}},
                "workerGroupSpecs": [{"groupName": "g", "replicas": 1, "minReplicas": 0,
                                      "maxReplicas": 3, "rayStartParams": {},
                                      "template": {"spec": {"containers": [worker]}}}],
            },
            **spec,
        },
    }


def config_of(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["rayClusterConfig"])


def test_hash_mutes_what_kuberay_mutes_and_sees_the_rest() -> None:
    base = config_of(body())
    h = spec_hash(base)
    muted = copy.deepcopy(base)
    muted["suspend"] = True
    muted["upgradeStrategy"] = {"type": "Recreate"}
    group = muted["workerGroupSpecs"][0]
    group.update(replicas=7, minReplicas=2, maxReplicas=9,
                 scaleStrategy={"workersToDelete": ["pod-a"]})
    group["template"]["spec"]["tolerations"] = [{"key": "k", "operator": "Exists"}]
    muted["headGroupSpec"]["template"]["spec"]["schedulingGates"] = [{"name": "kueue"}]
    assert spec_hash(muted) == h
    changed = copy.deepcopy(base)
    changed["headGroupSpec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"}]
    assert spec_hash(changed) != h
    image = copy.deepcopy(base)
    image["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = "other"
    assert spec_hash(image) != h
    # KubeRay's form: SHA-1 in base32hex
    assert len(h) == 32 and h == h.upper()


def test_partial_hash_sees_only_the_first_groups() -> None:
    base = config_of(body())
    more = copy.deepcopy(base)
    more["workerGroupSpecs"].append({**copy.deepcopy(base["workerGroupSpecs"][0]),
                                     "groupName": "g2"})
    assert spec_hash(more) != spec_hash(base)
    assert spec_hash(more, groups=1) == spec_hash(base)


def test_cluster_is_labelled_annotated_and_owned_as_kuberay_does() -> None:
    doc = body()
    cluster = ray_cluster(doc, "svc-abcde")
    meta = cluster["metadata"]
    assert meta["name"] == "svc-abcde" and meta["namespace"] == "ns"
    assert meta["labels"] == {"team": "a", "ray.io/originated-from-crd": "RayService",
                              "ray.io/originated-from-cr-name": "svc"}
    assert meta["annotations"]["note"] == "x"
    assert meta["annotations"][HASH_ANNOTATION] == spec_hash(config_of(doc))
    assert meta["annotations"][NUM_WORKER_GROUPS_ANNOTATION] == "1"
    assert meta["annotations"][VERSION_ANNOTATION] == OPERATOR_VERSION
    assert meta["ownerReferences"] == [{"apiVersion": "ray.io/v1", "kind": "RayService",
                                        "name": "svc", "uid": "u-1", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert cluster["spec"] == config_of(doc)
    parse_cluster_spec(cluster)  # a valid RayCluster
    # the spec passes through: with enableInTreeAutoscaling the RayCluster controller
    # gives its head rayscale's autoscaler sidecar, as for any RayCluster
    scaled = body()
    scaled["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] = True
    assert parse_cluster_spec(ray_cluster(scaled, "svc-b")).spec.enable_in_tree_autoscaling


def test_shared_network_gives_a_cluster_its_own_serve_port() -> None:
    doc = body()
    cluster = ray_cluster(doc, "svc-abcde", shared_serve_port=31234)
    assert serve_port(cluster["spec"]) == 31234
    assert serve_port(config_of(doc)) == 8000  # the RayService's own spec is untouched
    no_ports = body()
    del no_ports["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["ports"]
    made = ray_cluster(no_ports, "svc-x", shared_serve_port=31235)
    ports = {p["name"]: p["containerPort"] for p in
             made["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080,
                     "serve": 31235}
    # the Serve config it is given listens there
    sent = json.loads(serve_config_body(doc["spec"]["serveConfigV2"], 31234))
    assert sent["http_options"] == {"port": 31234}
    assert sent["applications"][0]["import_path"] == "m:app"
    assert "http_options" not in json.loads(serve_config_body(doc["spec"]["serveConfigV2"]))


def test_update_in_place_keeps_what_the_autoscaler_and_kueue_own() -> None:
    doc = body()
    current = ray_cluster(doc, "svc-abcde", shared_serve_port=31000)
    current["spec"]["suspend"] = True
    current["spec"]["workerGroupSpecs"][0]["replicas"] = 3
    current["spec"]["workerGroupSpecs"][0]["scaleStrategy"] = {"workersToDelete": ["w-1"]}
    goal = ray_cluster(doc, "svc-abcde", shared_serve_port=31000, current=current)
    group = goal["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 3 and group["scaleStrategy"] == {"workersToDelete": ["w-1"]}
    assert goal["spec"]["suspend"] is True
    assert serve_port(goal["spec"]) == 31000


def test_serve_service_selects_the_serving_clusters_ready_proxies() -> None:
    doc = body()
    cluster = ray_cluster(doc, "svc-abcde", shared_serve_port=31234)
    svc = serve_service(doc, cluster)
    assert svc["metadata"]["name"] == "svc-serve-svc"
    assert svc["metadata"]["labels"]["ray.io/serve"] == "svc-serve"
    assert svc["metadata"]["labels"]["ray.io/originated-from-crd"] == "RayService"
    assert svc["spec"]["selector"] == {"ray.io/cluster": "svc-abcde", "ray.io/serve": "true"}
    # the port the RayService declares, to the cluster's own
    assert svc["spec"]["ports"] == [{"name": "serve", "port": 8000, "targetPort": 31234,
                                     "protocol": "TCP"}]
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "RayService"


def test_users_serve_service_is_honoured() -> None:
    doc = body(serveService={"metadata": {"name": "front", "labels": {"x": "y"},
                                          "annotations": {"a": "b"}},
                             "spec": {"type": "NodePort", "selector": {"ignored": "yes"},
                                      "ports": [{"name": "serve", "port": 80,
                                                 "appProtocol": "http"}]}})
    cluster = ray_cluster(doc, "svc-abcde")
    svc = serve_service(doc, cluster)
    assert svc["metadata"]["name"] == "front" == serve_service_name_of(doc)
    assert svc["metadata"]["labels"]["x"] == "y"
    assert svc["metadata"]["annotations"] == {"a": "b"}
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == {"ray.io/cluster": "svc-abcde", "ray.io/serve": "true"}
    assert svc["spec"]["ports"] == [{"name": "serve", "port": 80, "appProtocol": "http",
                                     "targetPort": 8000}]


def test_no_serving_port_is_kuberays_error() -> None:
    doc = body()
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "ports"] = [{"name": "dashboard", "containerPort": 8265}]
    with pytest.raises(ValueError, match="port named 'serve'"):
        serve_service(doc, ray_cluster(doc, "svc-abcde"))


def test_head_service_is_the_serving_clusters_head() -> None:
    doc = body()
    cluster = ray_cluster(doc, "svc-abcde")
    cluster["metadata"]["uid"] = "c-1"
    svc = rayservice_head_service(doc, parse_cluster_spec(cluster), PodSettings())
    assert svc["metadata"]["name"] == "svc-head-svc"
    assert svc["metadata"]["labels"]["ray.io/identifier"] == "svc-head"
    assert svc["spec"]["selector"] == {"ray.io/cluster": "svc-abcde", "ray.io/node-type": "head"}
    assert svc["spec"]["clusterIP"] == "None"
    assert {p["name"] for p in svc["spec"]["ports"]} == {"gcs-server", "dashboard", "serve"}


def test_pods_of_a_rayservice_cluster_carry_the_serve_label() -> None:
    doc = body()
    cluster = parse_cluster_spec(ray_cluster(doc, "svc-abcde", shared_serve_port=31234))
    head = head_pod(cluster, PodSettings(shared_network=True))
    assert head["metadata"]["labels"]["ray.io/serve"] == "false"
    # on a shared pod network Serve's one proxy is the head's: workers take no traffic
    shared = worker_pod(cluster, cluster.worker_groups[0], PodSettings(shared_network=True))
    assert shared["metadata"]["labels"]["ray.io/serve"] == "false"
    assert shared["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/api/healthz"
    worker = worker_pod(cluster, cluster.worker_groups[0], PodSettings())
    assert worker["metadata"]["labels"]["ray.io/serve"] == "true"
    ready = worker["spec"]["containers"][0]["readinessProbe"]
    assert ready["httpGet"] == {"path": SERVE_HEALTH_PATH, "port": 31234}
    assert ready["failureThreshold"] == 1
    assert worker["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/api/healthz"
    plain = parse_cluster_spec({**ray_cluster(doc, "plain"), "metadata": {
        "name": "plain", "namespace": "ns"}})
    assert "ray.io/serve" not in head_pod(plain, PodSettings())["metadata"]["labels"]
    assert worker_pod(plain, plain.worker_groups[0], PodSettings())["spec"]["containers"][0][
        "readinessProbe"]["httpGet"]["path"] == "/api/healthz"


@pytest.mark.parametrize(("text", "problem"), [
    ("applications: [", "not valid YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("when: 2024-01-01\n", "JSON cannot carry"),
])
def test_bad_serve_config_says_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_serve_config(text)
    assert parse_serve_config("") == {} and parse_serve_config(None) == {}


def test_the_example_is_a_valid_rayservice_with_the_tests_app() -> None:
    """examples/rayservice.yaml (docs/serve.md) is what the dev-cluster tests run: valid,
    and its ConfigMap's code is tests/k8s/operator/rayservice_app/rs_app.py."""
    root = Path(__file__).parent.parent
    config_map, doc = yaml.safe_load_all((root / "examples" / "rayservice.yaml").read_text())
    app = root / "tests" / "k8s" / "operator" / "rayservice_app" / "rs_app.py"
    assert config_map["data"]["rs_app.py"] == app.read_text()
    doc["metadata"].update(namespace="ns", uid="u-1")
    service, invalid, _ = validate(doc)
    assert invalid is None and service is not None
    assert parse_serve_config(doc["spec"]["serveConfigV2"])["applications"][0][
        "import_path"] == "rs_app:app"
    parse_cluster_spec(ray_cluster(doc, "greeter-abcde"))
