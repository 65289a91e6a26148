"""RayServices on the real control plane with real Ray Serve in the virtual node's pods.

One RayService runs through the module: ``examples/rayservice.yaml``'s, its
clusters tiny (a head of 1 CPU whose Serve runs the two-deployment app of
``rayservice_app/rs_app.py``, shipped in a ConfigMap mounted on the head's
PYTHONPATH; a worker group of 0 replicas; rayscale's autoscaler sidecar in the
head, ``enableInTreeAutoscaling``), in the order a user meets things:

1. it becomes Ready: the head and serve Services exist, requests through the
   serve Service's endpoints succeed, the status lists the application with
   both deployments and one serve endpoint;
2. a ``user_config`` change is applied in place (same cluster), and shows in
   answers, with traffic flowing and no request failing;
3. a change to the cluster spec starts a new cluster; traffic (bounded rate and
   time, endpoints re-resolved every 0.5 s) moves to it with no failed request,
   and the old cluster is deleted ``rayClusterDeletionDelaySeconds`` after;
4. a worker group added at the end updates the cluster in place;
5. a cluster change together with a Serve config whose import fails: the new
   cluster's application is DEPLOY_FAILED, the old cluster keeps serving, the
   status and an Event say why;
6. ``suspend``: every cluster and Service it owns is deleted, ``Suspended``.

Requests go where a client behind the serve Service would send them: to the
endpoints the Service selects (:mod:`tests.k8s.operator.serve_traffic`: there
are no EndpointSlices on this dev cluster, see there).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import ConfigMap, Event, Namespace, Pod, Service
from lightkube.types import PatchType

from tests import netcheck
from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, without_shutdown_drain
from tests.k8s.operator.serve_traffic import Load, endpoints

RayService = create_namespaced_resource("ray.io", "v1", "RayService", "rayservices")
APP = Path(__file__).parent / "rayservice_app" / "rs_app.py"
EXAMPLE = Path(__file__).parents[3] / "examples" / "rayservice.yaml"
NAME = "greeter"
DELETION_DELAY_S = 3
ORIGIN = {"ray.io/originated-from-crd": "RayService", "ray.io/originated-from-cr-name": NAME}


def serve_config(greeting: str = "hello", import_path: str = "rs_app:app") -> str:
    return yaml.safe_dump({"applications": [{
        "name": "greet", "import_path": import_path, "route_prefix": "/",
        "deployments": [
            {"name": "Greeter", "user_config": {"greeting": greeting},
             "ray_actor_options": {"num_cpus": 0.1}},
            {"name": "Front", "ray_actor_options": {"num_cpus": 0.1}},
        ],
    }]})


def rayservice() -> dict[str, Any]:
    """``examples/rayservice.yaml``'s RayService (docs/serve.md shows it), with a short
    deletion delay and Ray's shutdown drain off (NO_DRAIN: a deleted head exits at once)."""
    _, doc = yaml.safe_load_all(EXAMPLE.read_text())
    doc["spec"]["rayClusterDeletionDelaySeconds"] = DELETION_DELAY_S
    without_shutdown_drain(doc["spec"]["rayClusterConfig"])
    assert doc["metadata"]["name"] == NAME
    return dict(doc)


@pytest.fixture(scope="module")
def svc_ns(kube: Client, operator: Any) -> Iterator[str]:
    """A namespace for the module, the app's ConfigMap and the RayService in it; at the
    end the RayService is deleted and everything it owned must be collected."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace.from_dict({"metadata": {"name": ns}}))  # type: ignore[arg-type]
    try:
        kube.create(ConfigMap.from_dict({  # type: ignore[arg-type]
            "metadata": {"name": "rs-app"}, "data": {"rs_app.py": APP.read_text()}}),
            namespace=ns)
        kube.create(RayService.from_dict(rayservice()), namespace=ns)  # type: ignore[arg-type]
        yield ns
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(RayService, NAME, namespace=ns)

        def gone() -> bool:
            return not (list(kube.list(RayCluster, namespace=ns))
                        or list(kube.list(Service, namespace=ns, labels=ORIGIN))
                        or list(kube.list(Pod, namespace=ns)))

        try:
            wait_for(gone, 120, "the RayService's clusters, Services and pods collected")
        finally:
            for pod in kube.list(Pod, namespace=ns):
                assert pod.metadata is not None and pod.metadata.name is not None
                with contextlib.suppress(ApiError):
                    kube.delete(Pod, pod.metadata.name, namespace=ns, grace_period=1)
            wait_for(lambda: not list(kube.list(Pod, namespace=ns)), 60, "pods gone")
            kube.delete(Namespace, ns)


def status(kube: Client, ns: str) -> dict[str, Any]:
    return dict(kube.get(RayService, NAME, namespace=ns).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def wait_status(kube: Client, ns: str, what: str, check: Any, timeout_s: float = 240
                ) -> dict[str, Any]:
    try:
        return wait_for(lambda: (lambda st: st if check(st) else None)(status(kube, ns)),
                        timeout_s, what, interval_s=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status now {status(kube, ns)}") from None


def serve_endpoints(kube: Client, ns: str) -> list[tuple[str, int]]:
    return endpoints(kube, ns, f"{NAME}-serve-svc")


def ask(kube: Client, ns: str) -> dict[str, Any]:
    (ip, port), *_ = serve_endpoints(kube, ns)
    got = httpx.get(f"http://{ip}:{port}/?name=test", timeout=10, trust_env=False)
    assert got.status_code == 200, got.text
    return dict(got.json())


def events(kube: Client, ns: str) -> list[Event]:
    return [e for e in kube.list(Event, namespace=ns)
            if e.involvedObject.kind == "RayService" and e.involvedObject.name == NAME]


def exists(kube: Client, ns: str, cluster: str) -> bool:
    try:
        obj = kube.get(RayCluster, cluster, namespace=ns)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    return not obj["metadata"].get("deletionTimestamp")


def patch_spec(kube: Client, ns: str, spec: dict[str, Any]) -> None:
    kube.patch(RayService, NAME, {"spec": spec}, namespace=ns,  # type: ignore[arg-type]
               patch_type=PatchType.MERGE)


def changed_cluster(marker: str) -> dict[str, Any]:
    """``rayClusterConfig`` with one env var more on the head: a new cluster spec."""
    config = rayservice()["spec"]["rayClusterConfig"]
    config["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "UPGRADE_MARK", "value": marker})
    return dict(config)


# ------------------------------------------------------------------------ tests


def test_rayservice_becomes_ready_and_serves(kube: Client, svc_ns: str) -> None:
    ns = svc_ns
    st = wait_status(kube, ns, "the RayService Ready",
                     lambda s: condition(s, "Ready").get("status") == "True")
    assert condition(st, "Ready")["reason"] == "NonZeroServeEndpoints"
    assert st["serviceStatus"] == "Running" and st["numServeEndpoints"] == 1
    assert condition(st, "UpgradeInProgress")["reason"] == "NoPendingCluster"
    assert not (st.get("pendingServiceStatus") or {}).get("rayClusterName")
    active = st["activeServiceStatus"]
    cluster = active["rayClusterName"]
    assert cluster.startswith(f"{NAME}-") and len(cluster) == len(NAME) + 6
    app = active["applicationStatuses"]["greet"]
    assert app["status"] == "RUNNING", app
    assert set(app["serveDeploymentStatuses"]) == {"Greeter", "Front"}
    assert all(d["status"] == "HEALTHY" for d in app["serveDeploymentStatuses"].values())
    assert active["rayClusterStatus"]["state"] == "ready"
    # the cluster: owned by the RayService, labelled and annotated as KubeRay does
    obj = kube.get(RayCluster, cluster, namespace=ns)
    labels, notes = obj["metadata"]["labels"], obj["metadata"]["annotations"]
    assert {k: labels[k] for k in ORIGIN} == ORIGIN
    assert notes["ray.io/hash-without-replicas-and-workers-to-delete"]
    assert notes["ray.io/num-worker-groups"] == "1"
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "RayService"
    # the Services: the head's and the serve Service, selecting the serving cluster's pods
    serve = kube.get(Service, f"{NAME}-serve-svc", namespace=ns)
    assert serve.spec is not None and serve.spec.selector == {
        "ray.io/cluster": cluster, "ray.io/serve": "true"}
    assert [(p.name, p.port) for p in serve.spec.ports or []] == [("serve", 8000)]
    head_svc = kube.get(Service, f"{NAME}-head-svc", namespace=ns)
    assert head_svc.spec is not None and head_svc.spec.selector is not None
    assert head_svc.spec.selector["ray.io/cluster"] == cluster
    # the head pod's Serve proxy is healthy: labelled so, the one endpoint
    (head,) = kube.list(Pod, namespace=ns, labels={"ray.io/cluster": cluster,
                                                   "ray.io/node-type": "head"})
    assert head.metadata is not None and head.metadata.labels is not None
    assert head.metadata.labels["ray.io/serve"] == "true"
    # enableInTreeAutoscaling: rayscale's autoscaler sidecar, as in any RayCluster's head
    assert head.spec is not None
    assert "autoscaler" in [c.name for c in head.spec.containers]
    assert head.status is not None
    assert [ip for ip, _ in serve_endpoints(kube, ns)] == [head.status.podIP]
    # one Serve proxy, listening on the head pod's loopback address only (the machine's
    # processes: the pods are among them)
    ((_, port),) = serve_endpoints(kube, ns)
    pids = (int(p) for p in os.listdir("/proc") if p.isdigit())
    serving = [s for s in netcheck.listeners(pids)
               if s.port == port and s.proto.startswith("tcp")]
    assert serving and all(s.ip == head.status.podIP for s in serving), serving
    answer = ask(kube, ns)
    assert answer == {"text": "hello test", "cluster": cluster}
    reasons = {e.reason for e in events(kube, ns)}
    for reason in ("CreatedRayCluster", "UpdatedServeApplications", "UpdatedHeadPodServeLabel",
                   "CreatedService"):
        assert reason in reasons, reasons


def test_user_config_change_is_applied_in_place_without_a_failed_request(
        kube: Client, svc_ns: str) -> None:
    ns = svc_ns
    before = status(kube, ns)["activeServiceStatus"]["rayClusterName"]
    with Load(lambda: serve_endpoints(kube, ns), rate=10, max_s=120) as load:
        wait_for(lambda: load.outcome.ok >= 5, 30, "answers before the change")
        patch_spec(kube, ns, {"serveConfigV2": serve_config(greeting="hi")})
        wait_for(lambda: load.outcome.texts["hi load"] >= 5, 90,
                 "answers with the new greeting")
    out = load.outcome
    assert out.failed == 0, out.errors
    assert out.texts["hello load"] > 0 and out.texts["hi load"] >= 5, out.texts
    assert set(out.clusters) == {before}, out.clusters  # in place: the same cluster
    st = status(kube, ns)
    assert st["activeServiceStatus"]["rayClusterName"] == before
    assert not (st.get("pendingServiceStatus") or {}).get("rayClusterName")
    assert [c["metadata"]["name"] for c in kube.list(RayCluster, namespace=ns)] == [before]


def test_cluster_change_is_a_zero_downtime_upgrade(kube: Client, svc_ns: str) -> None:
    ns = svc_ns
    old = status(kube, ns)["activeServiceStatus"]["rayClusterName"]
    with Load(lambda: serve_endpoints(kube, ns), rate=20, max_s=240) as load:
        wait_for(lambda: load.outcome.ok >= 10, 30, "answers before the upgrade")
        patch_spec(kube, ns, {"rayClusterConfig": changed_cluster("1")})
        upgrading = wait_status(kube, ns, "a pending cluster",
                                lambda s: (s.get("pendingServiceStatus") or {})
                                .get("rayClusterName"), timeout_s=30)
        new = upgrading["pendingServiceStatus"]["rayClusterName"]
        assert new != old
        assert condition(upgrading, "UpgradeInProgress")["status"] == "True"
        wait_status(kube, ns, "the new cluster active",
                    lambda s: s["activeServiceStatus"].get("rayClusterName") == new)
        switched = time.monotonic()
        assert exists(kube, ns, old)  # the old one serves on for the deletion delay
        wait_for(lambda: not exists(kube, ns, old), 60, f"the old cluster {old} deleted")
        deleted = time.monotonic()
        wait_for(lambda: load.outcome.clusters[new] >= 20, 30, "answers from the new cluster")
    out = load.outcome
    assert out.failed == 0, (out.errors, out.ok)
    assert out.clusters[old] > 0 and out.clusters[new] >= 20, out.clusters
    assert deleted - switched >= DELETION_DELAY_S - 1.5, (deleted - switched)
    st = status(kube, ns)
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "UpgradeInProgress")["reason"] == "NoPendingCluster"
    assert st["activeServiceStatus"]["applicationStatuses"]["greet"]["status"] == "RUNNING"
    serve = kube.get(Service, f"{NAME}-serve-svc", namespace=ns)
    assert serve.spec is not None and serve.spec.selector is not None
    assert serve.spec.selector["ray.io/cluster"] == new
    reasons = [e.reason for e in events(kube, ns)]
    assert "UpdatedService" in reasons and "DeletedRayCluster" in reasons, reasons
    print(f"\nzero-downtime upgrade: {out.ok} answered, {out.failed} failed in "
          f"{out.seconds:.0f} s; {dict(out.clusters)}")


def test_a_worker_group_added_at_the_end_updates_the_cluster_in_place(
        kube: Client, svc_ns: str) -> None:
    ns = svc_ns
    active = status(kube, ns)["activeServiceStatus"]["rayClusterName"]
    config = changed_cluster("1")  # the spec the upgrade above left
    extra = {**config["workerGroupSpecs"][0], "groupName": "more"}
    config["workerGroupSpecs"].append(extra)
    patch_spec(kube, ns, {"rayClusterConfig": config})

    def updated() -> dict[str, Any] | None:
        obj = kube.get(RayCluster, active, namespace=ns)
        groups = [g["groupName"] for g in obj["spec"].get("workerGroupSpecs") or []]
        return obj if groups == ["small", "more"] else None

    obj = wait_for(updated, 30, f"the worker group added to {active}")
    assert obj["metadata"]["annotations"]["ray.io/num-worker-groups"] == "2"
    st = status(kube, ns)
    assert st["activeServiceStatus"]["rayClusterName"] == active
    assert not (st.get("pendingServiceStatus") or {}).get("rayClusterName")
    assert "UpdatedRayCluster" in [e.reason for e in events(kube, ns)]
    assert ask(kube, ns)["cluster"] == active


def test_broken_new_config_keeps_the_old_cluster_serving(kube: Client, svc_ns: str) -> None:
    ns = svc_ns
    active = status(kube, ns)["activeServiceStatus"]["rayClusterName"]
    patch_spec(kube, ns, {"rayClusterConfig": changed_cluster("2"),
                          "serveConfigV2": serve_config(import_path="rs_app_gone:app")})

    def failed(st: dict[str, Any]) -> bool:
        apps = (st.get("pendingServiceStatus") or {}).get("applicationStatuses") or {}
        return (apps.get("greet") or {}).get("status") == "DEPLOY_FAILED"

    st = wait_status(kube, ns, "the new cluster's application DEPLOY_FAILED", failed)
    pending = st["pendingServiceStatus"]["rayClusterName"]
    assert pending != active and st["activeServiceStatus"]["rayClusterName"] == active
    assert "rs_app_gone" in st["pendingServiceStatus"]["applicationStatuses"]["greet"]["message"]
    upgrade = condition(st, "UpgradeInProgress")
    assert upgrade["status"] == "True" and upgrade["reason"] == "BothActivePendingClustersExist"
    assert "DEPLOY_FAILED" in upgrade["message"] and pending in upgrade["message"], upgrade
    assert condition(st, "Ready")["status"] == "True"
    # the old cluster still serves its app, and only it
    with Load(lambda: serve_endpoints(kube, ns), rate=10, max_s=5) as load:
        time.sleep(3)
    assert load.outcome.failed == 0 and set(load.outcome.clusters) == {active}, load.outcome
    warned = [e for e in events(kube, ns) if e.reason == "ServeApplicationFailed"]
    assert any(pending in (e.message or "") and "DEPLOY_FAILED" in (e.message or "")
               for e in warned), [e.message for e in warned]


def test_suspend_deletes_what_it_owns(kube: Client, svc_ns: str) -> None:
    ns = svc_ns
    patch_spec(kube, ns, {"suspend": True})
    st = wait_status(kube, ns, "Suspended",
                     lambda s: condition(s, "Suspended").get("status") == "True", timeout_s=90)
    assert condition(st, "Ready")["reason"] == "SuspendComplete"
    assert not (st.get("activeServiceStatus") or {}).get("rayClusterName")
    assert not st.get("numServeEndpoints")
    assert not list(kube.list(RayCluster, namespace=ns, labels=ORIGIN)) or all(
        c["metadata"].get("deletionTimestamp")
        for c in kube.list(RayCluster, namespace=ns, labels=ORIGIN))
    assert not [s for s in kube.list(Service, namespace=ns, labels=ORIGIN)
                if s.metadata is not None and not s.metadata.deletionTimestamp]
