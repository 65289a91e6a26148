"""The operator's pure core: manifests and reconcile decisions, rule by rule."""

from __future__ import annotations

from pathlib import Path

import yaml

from rayscale.api import RayCluster
from rayscale.operator.desired import PodSettings, gcs_port, head_pod, head_service, worker_pod
from rayscale.operator.reconcile import ObservedPod, conditions, reconcile
from rayscale.raystart import DEMAND_PULL_ENV
from rayscale.spec import parse_cluster_spec

EXAMPLE = Path(__file__).parent.parent / "examples" / "seeds-autoscaler.yaml"


def spec(**changes: object) -> RayCluster:
    doc = yaml.safe_load(EXAMPLE.read_text())
    group = doc["spec"]["workerGroupSpecs"][0]
    for key, value in changes.items():
        if key == "suspend":
            doc["spec"]["suspend"] = value
        elif key == "autoscaling":
            doc["spec"]["enableInTreeAutoscaling"] = value
        elif key == "workersToDelete":
            group["scaleStrategy"] = {"workersToDelete": value}
        else:
            group[key] = value
    return parse_cluster_spec(doc)


def head(phase: str = "Running") -> ObservedPod:
    return ObservedPod("c-head-x", "headgroup", phase, ready=True, pod_ip="127.20.0.5")


def worker(name: str, phase: str = "Running", created: str = "2026-01-01T00:00:00Z",
           ready: bool | None = None) -> ObservedPod:
    ready = phase == "Running" if ready is None else ready
    return ObservedPod(name, "small-group", phase, ready=ready, created=created)


SETTINGS = PodSettings(shared_network=True)


def test_worker_pod_runs_ray_start_as_an_argument_list() -> None:
    s = spec()
    pod = worker_pod(s, s.worker_groups[0], SETTINGS)
    argv = pod["spec"]["containers"][0]["command"]
    port = gcs_port(s, SETTINGS)  # per cluster on a shared pod network
    assert argv[:3] == ["ray", "start",
                        f"--address=raycluster-autoscaler-head-svc.default.svc.cluster.local:{port}"]
    plain = worker_pod(s, s.worker_groups[0], PodSettings())["spec"]["containers"][0]["command"]
    assert plain[2].endswith(":6379")
    # pods sharing a machine each get their own /tmp/ray (raylets race for socket names)
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "rayscale-ray-tmp", "mountPath": "/tmp/ray"} in mounts
    assert {"name": "rayscale-ray-tmp", "emptyDir": {}} in pod["spec"]["volumes"]
    assert "--node-ip-address=$(POD_IP)" in argv and "--num-cpus=1" in argv
    assert "--memory=1073741824" in argv and argv[-1] == "--block"
    assert "--labels=rayscale.io/group=small-group,rayscale.io/node=$(POD_NAME)" in argv
    labels = pod["metadata"]["labels"]
    assert labels["ray.io/cluster"] == "raycluster-autoscaler"
    assert labels["ray.io/group"] == "small-group" and labels["ray.io/node-type"] == "worker"
    assert labels["ray.io/is-ray-node"] == "yes"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_every_ray_container_runs_with_autoscaler_v2() -> None:
    """Ray Data asks for nodes with request_resources: only under v2 does that reach the
    cluster resource constraints the sidecar reads (a template's own value cannot undo it)."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    container = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "RAY_enable_autoscaler_v2", "value": "0"}]
    s = parse_cluster_spec(doc)
    for pod in (head_pod(s, SETTINGS), worker_pod(s, s.worker_groups[0], SETTINGS)):
        env = pod["spec"]["containers"][0]["env"]
        assert [e for e in env if e["name"] == "RAY_enable_autoscaler_v2"] == [
            {"name": "RAY_enable_autoscaler_v2", "value": "1"}]


def test_an_autoscaling_head_pulls_demand_every_200_ms_unless_its_template_says() -> None:
    def pull(pod: dict[str, object]) -> list[object]:
        env = pod["spec"]["containers"][0]["env"]  # type: ignore[index]
        return [e["value"] for e in env if e["name"] == DEMAND_PULL_ENV]

    assert pull(head_pod(spec(), SETTINGS)) == ["200"]
    assert pull(head_pod(spec(autoscaling=False), SETTINGS)) == []
    s = spec()
    assert pull(worker_pod(s, s.worker_groups[0], SETTINGS)) == []
    doc = yaml.safe_load(EXAMPLE.read_text())
    container = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": DEMAND_PULL_ENV, "value": "1000"}]
    assert pull(head_pod(parse_cluster_spec(doc), SETTINGS)) == ["1000"]


def test_head_service_is_headless_with_the_head_ports() -> None:
    svc = head_service(spec(), PodSettings())
    assert svc["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in svc["spec"]["ports"]} == {6379, 8265, 10001}
    shared = {p["name"]: p["port"] for p in head_service(spec(), SETTINGS)["spec"]["ports"]}
    assert shared["gcs-server"] != 6379 and shared["client"] == shared["gcs-server"] + 1


def test_new_cluster_creates_head_and_min_replicas() -> None:
    s = spec(replicas=2, minReplicas=2)
    actions = reconcile(s, [], SETTINGS)
    kinds = [p["metadata"]["generateName"] for p in actions.create]
    assert kinds.count("raycluster-autoscaler-head-") == 1
    assert kinds.count("raycluster-autoscaler-small-group-worker-") == 2


def test_replicas_clamped_and_reported() -> None:
    s = spec(replicas=50)  # max is 4
    actions = reconcile(s, [head()], SETTINGS)
    assert len(actions.create) == 4
    assert any(e.reason == "ReplicasOutOfBounds" for e in actions.events)


def test_workers_to_delete_are_deleted_and_failed_ones_replaced() -> None:
    s = spec(replicas=2, workersToDelete=["w-a"])
    pods = [head(), worker("w-a"), worker("w-b", phase="Failed"), worker("w-c")]
    actions = reconcile(s, pods, SETTINGS)
    assert sorted(actions.delete) == ["w-a", "w-b"]
    assert len(actions.create) == 1  # w-c stays; one more to reach 2


def test_with_autoscaling_the_operator_never_picks_pods_itself() -> None:
    s = spec(replicas=1, autoscaling=True)
    actions = reconcile(s, [head(), worker("w-a"), worker("w-b")], SETTINGS)
    assert actions.delete == []
    assert any(e.reason == "WaitingForWorkersToDelete" for e in actions.events)


def test_without_autoscaling_scale_down_removes_pending_then_newest() -> None:
    s = spec(replicas=1, autoscaling=False)
    pods = [head(), worker("old", created="2026-01-01T00:00:00Z"),
            worker("new", created="2026-01-02T00:00:00Z"), worker("pending", phase="Pending")]
    actions = reconcile(s, pods, SETTINGS)
    assert sorted(actions.delete) == ["new", "pending"]


def test_suspend_removes_every_pod_and_failed_head_is_replaced() -> None:
    s = spec(suspend=True)
    actions = reconcile(s, [head(), worker("w-a")], SETTINGS)
    assert sorted(actions.delete) == ["c-head-x", "w-a"] and not actions.create
    assert actions.status["state"] == "suspended"
    actions = reconcile(spec(), [head("Failed")], SETTINGS)
    assert actions.delete == ["c-head-x"]
    created = [p["metadata"]["generateName"] for p in actions.create]
    assert created == ["raycluster-autoscaler-head-"]


def test_status_like_kuberay() -> None:
    s = spec(replicas=2)
    status = reconcile(s, [head(), worker("a"), worker("b")], SETTINGS).status
    assert status["state"] == "ready"
    assert status["desiredWorkerReplicas"] == 2 and status["availableWorkerReplicas"] == 2
    assert status["minWorkerReplicas"] == 0 and status["maxWorkerReplicas"] == 4
    assert status["desiredCPU"] == "2"  # head num-cpus 0 + 2 x 1
    assert status["head"]["podIP"] == "127.20.0.5"
    assert status["head"]["serviceName"] == "raycluster-autoscaler-head-svc"


def test_conditions_like_kuberay_keep_their_transition_time() -> None:
    s = spec(replicas=1)
    ready = reconcile(s, [head(), worker("a")], SETTINGS).status
    first = conditions(ready, False, [], "2026-11-22T01:00:00Z", True)
    by_type = {c["type"]: c for c in first}
    assert by_type["HeadPodReady"]["status"] == "True"
    assert by_type["RayClusterProvisioned"]["status"] == "True"
    assert by_type["RayClusterSuspended"]["status"] == "False"
    later = conditions(ready, False, first, "2026-11-22T02:00:00Z", True)
    assert later == first  # nothing changed: nothing to write
    starting = reconcile(s, [head("Pending")], SETTINGS).status
    again = {c["type"]: c for c in conditions(starting, False, first, "2026-11-22T03:00:00Z",
                                              False)}
    assert again["HeadPodReady"]["status"] == "False"
    assert again["RayClusterProvisioned"]["status"] == "True"  # provisioned once stays so
