"""The RayService state machine (rayservice_decide), step by step with fixed clocks."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rayscale.operator.rayservice_decide import (
    ClusterView,
    Decision,
    Observed,
    decide,
    go_duration_s,
    status_patch,
    validate,
)
from rayscale.operator.rayservice_desired import OPERATOR_VERSION, spec_hash

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
CONFIG = "applications:\n- name: app\n  import_path: m:app\n"
RUNNING_APPS = {"app": {"status": "RUNNING",
                        "serveDeploymentStatuses": {"D": {"status": "HEALTHY"}}}}


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    container = {"name": "ray", "image": "rayproject/ray:2.60.0",
                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    doc: dict[str, Any] = {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "svc", "namespace": "ns", "uid": "u-1", "generation": 3,
                     "resourceVersion": "10"},
        "spec": {
            "serveConfigV2": CONFIG,
            "rayClusterConfig": {
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {
                    "containers": [copy.deepcopy(container)]}}},
                "workerGroupSpecs": [{"groupName": "g", "replicas": 0, "minReplicas": 0,
                                      "maxReplicas": 2, "rayStartParams": {},
                                      "template": {"spec": {"containers": [
                                          copy.deepcopy(container)]}}}],
            },
            **spec,
        },
    }
    if status is not None:
        doc["status"] = status
    return doc


def cluster(name: str, doc: dict[str, Any], **kw: Any) -> ClusterView:
    """A cluster made from ``doc``'s spec (its hash), with what is observed of it."""
    config = doc["spec"]["rayClusterConfig"]
    base: dict[str, Any] = dict(hash=spec_hash(config), worker_groups="1",
                                version=OPERATOR_VERSION, status={"state": "ready"})
    return ClusterView(name=name, **{**base, **kw})


def serving(name: str, doc: dict[str, Any], config: str = CONFIG, **kw: Any) -> ClusterView:
    """A cluster whose Serve runs ``config``'s app, its head proxy healthy and labelled."""
    return cluster(name, doc, **{**dict(head_pod=f"{name}-head", head_ready=True,
                                        head_label="true", proxy_healthy=True,
                                        apps=RUNNING_APPS, applied_config=config), **kw})


def seen(doc: dict[str, Any], *views: ClusterView, serving_cluster: str | None = None,
         deletions: dict[str, datetime] | None = None, now: datetime = NOW,
         env: str | None = None) -> Observed:
    service, invalid, reason = validate(doc)
    return Observed(body=doc, service=service, invalid=invalid, invalid_reason=reason,
                    clusters={v.name: v for v in views}, serving=serving_cluster,
                    services=(("svc-head-svc", "svc-serve-svc") if serving_cluster else ()),
                    deletions=deletions or {}, now=now, new_suffix="zzzzz",
                    zero_downtime_env=env)


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def active_status(name: str = "svc-aaaaa") -> dict[str, Any]:
    """The status of a RayService serving from ``name`` (Ready, no upgrade)."""
    return {"activeServiceStatus": {"rayClusterName": name,
                                    "applicationStatuses": RUNNING_APPS},
            "pendingServiceStatus": {}, "numServeEndpoints": 1, "serviceStatus": "Running",
            "observedGeneration": 3,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints",
                 "message": "Number of serve endpoints is greater than 0",
                 "lastTransitionTime": "2026-11-29T11:00:00Z", "observedGeneration": 3},
                {"type": "UpgradeInProgress", "status": "False", "reason": "NoPendingCluster",
                 "message": "Active Ray cluster exists and no pending Ray cluster",
                 "lastTransitionTime": "2026-11-29T11:00:00Z", "observedGeneration": 3}]}


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("change", "reason", "problem"), [
    (lambda d: d["metadata"].update(name="s" * 48), "InvalidRayServiceMetadata",
     "metadata.name: RayService name should be no more than 47"),
    (lambda d: d["metadata"].update(name="9lives"), "InvalidRayServiceMetadata",
     "DNS1035"),
    (lambda d: d["metadata"].update(annotations={"ray.io/initializing-timeout": "soon"}),
     "InvalidRayServiceMetadata", "ray.io/initializing-timeout has invalid format"),
    (lambda d: d["metadata"].update(annotations={"ray.io/initializing-timeout": "-5m"}),
     "InvalidRayServiceMetadata", "must be a positive duration"),
    (lambda d: d["spec"].update(upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade"}),
     "InvalidRayServiceSpec", "spec.upgradeStrategy.type: NewClusterWithIncrementalUpgrade is "
     "not supported by rayscale"),
    (lambda d: d["spec"].update(upgradeStrategy={"type": "Sideways"}),
     "InvalidRayServiceSpec", "spec.upgradeStrategy.type: must be one of"),
    (lambda d: d["spec"].update(serveConfigV2="applications: ["),
     "InvalidRayServiceSpec", "spec.serveConfigV2: not valid YAML"),
    (lambda d: d["spec"].update(serveConfigV2="applications:\n- name: a\n"),
     "InvalidRayServiceSpec", "spec.serveConfigV2.applications[0].import_path: required"),
    (lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"].update(
        headService={"metadata": {"name": "mine"}}), "InvalidRayServiceSpec",
     "headService.metadata.name: should not be set"),
    (lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(minReplicas=5),
     "InvalidRayServiceSpec", "spec.rayClusterConfig.workerGroupSpecs[0].maxReplicas"),
    (lambda d: d["spec"].update(rayClusterDeletionDelaySeconds=-1), "InvalidRayServiceSpec",
     "spec.rayClusterDeletionDelaySeconds"),
])
def test_invalid_rayservice_is_refused_naming_the_field(change: Any, reason: str,
                                                         problem: str) -> None:
    doc = body(active_status())
    change(doc)
    service, invalid, why = validate(doc)
    assert service is None and why == reason
    assert invalid is not None and problem in invalid, invalid
    out = decide(seen(doc, serving("svc-aaaaa", body())))
    assert out.status is not None
    ready = cond(out.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ValidationFailed")
    assert problem in ready["message"]
    assert out.events == [("Warning", reason, f"ns/{doc['metadata']['name']}: {invalid}")]
    # nothing else changes: no cluster, Service, label or config touched
    assert (out.create_cluster, out.update_clusters, out.delete_clusters, out.labels,
            out.apply_config, out.services_to) == (None, [], [], [], [], None)
    assert out.status["activeServiceStatus"] == doc["status"]["activeServiceStatus"]


def test_deprecated_thresholds_are_accepted() -> None:
    service, invalid, _ = validate(body(serviceUnhealthySecondThreshold=900,
                                        deploymentUnhealthySecondThreshold=300))
    assert invalid is None and service is not None


def test_go_durations() -> None:
    assert go_duration_s("1h30m") == 5400
    assert go_duration_s("300ms") == pytest.approx(0.3)
    assert go_duration_s("1.5s") == 1.5
    assert go_duration_s("-2m") == -120
    assert go_duration_s("0") == 0
    assert go_duration_s("5") is None and go_duration_s("1d") is None


# ------------------------------------------------------------- the first cluster


def test_new_rayservice_names_its_first_cluster_then_creates_it() -> None:
    out = decide(seen(body()))
    assert out.status is not None and out.create_cluster is None
    assert out.status["pendingServiceStatus"] == {"rayClusterName": "svc-zzzzz"}
    assert out.status["activeServiceStatus"] == {}
    ready, upgrade = cond(out.status, "Ready"), cond(out.status, "UpgradeInProgress")
    assert (ready["status"], ready["reason"]) == ("False", "Initializing")
    assert (upgrade["status"], upgrade["reason"]) == ("False", "Initializing")
    assert out.status["observedGeneration"] == 3 and "serviceStatus" in out.status
    assert out.status["serviceStatus"] is None
    assert out.requeue_after is not None and out.requeue_after <= 0.5
    # next: the name is in the status and no cluster exists: it is created, no new name
    doc = body(out.status)
    again = decide(seen(doc))
    assert again.create_cluster == "svc-zzzzz"
    assert again.status is None or again.status["pendingServiceStatus"] == {
        "rayClusterName": "svc-zzzzz"}


def first_status() -> dict[str, Any]:
    return decide(seen(body())).status or {}


def test_first_cluster_gets_the_config_once_its_head_is_ready() -> None:
    doc = body(first_status())
    booting = cluster("svc-zzzzz", doc, head_pod="h", head_ready=False, head_label="false")
    out = decide(seen(doc, booting))
    assert out.apply_config == [] and out.services_to is None
    assert "its head pod is not ready" not in str(out.status)  # no active: no upgrade message
    up = cluster("svc-zzzzz", doc, head_pod="h", head_ready=True, head_label="false",
                 proxy_healthy=False, apps={})
    out = decide(seen(doc, up))
    assert out.apply_config == ["svc-zzzzz"]
    assert out.labels == []  # already "false"
    assert out.services_to is None


def test_first_cluster_takes_traffic_when_its_apps_run_and_its_proxy_is_healthy() -> None:
    doc = body(first_status())
    deploying = cluster("svc-zzzzz", doc, head_pod="h", head_ready=True, head_label="false",
                        proxy_healthy=True, applied_config=CONFIG,
                        apps={"app": {"status": "DEPLOYING"}})
    out = decide(seen(doc, deploying))
    assert out.labels == [("h", "true")] and out.services_to is None
    assert out.apply_config == []  # given already
    ready = cluster("svc-zzzzz", doc, head_pod="h", head_ready=True, head_label="false",
                    proxy_healthy=True, applied_config=CONFIG, apps=RUNNING_APPS)
    out = decide(seen(doc, ready))
    # not on the label this round writes: the Service would select no pod yet
    assert out.labels == [("h", "true")] and out.services_to is None
    labelled = cluster("svc-zzzzz", doc, head_pod="h", head_ready=True, head_label="true",
                       proxy_healthy=True, applied_config=CONFIG, apps=RUNNING_APPS)
    out = decide(seen(doc, labelled))
    assert out.labels == [] and out.services_to == "svc-zzzzz"
    st = out.status
    assert st is not None
    assert st["activeServiceStatus"]["rayClusterName"] == "svc-zzzzz"  # promoted
    assert st["activeServiceStatus"]["applicationStatuses"] == RUNNING_APPS
    assert st["activeServiceStatus"]["rayClusterStatus"] == {"state": "ready"}
    assert st["pendingServiceStatus"] == {}
    assert st["numServeEndpoints"] == 1 and st["serviceStatus"] == "Running"
    assert cond(st, "Ready")["reason"] == "NonZeroServeEndpoints"
    assert cond(st, "UpgradeInProgress")["reason"] == "NoPendingCluster"


def test_no_switch_to_a_cluster_whose_proxy_is_not_healthy() -> None:
    doc = body(first_status())
    view = cluster("svc-zzzzz", doc, head_pod="h", head_ready=True, head_label="false",
                   proxy_healthy=False, applied_config=CONFIG, apps=RUNNING_APPS)
    out = decide(seen(doc, view))
    assert out.services_to is None
    st = out.status or doc["status"]
    assert st["pendingServiceStatus"]["rayClusterName"] == "svc-zzzzz"
    assert not st.get("numServeEndpoints")
    # a Ready worker whose proxy is healthy (its readiness says so) is an endpoint
    out = decide(seen(doc, view.__class__(**{**view.__dict__, "ready_workers": 1})))
    assert out.services_to == "svc-zzzzz"
    assert out.status is not None and out.status["numServeEndpoints"] == 1


def test_excluded_head_is_never_an_endpoint() -> None:
    doc = body(first_status(), excludeHeadPodFromServeSvc=True)
    view = cluster("svc-zzzzz", doc, head_pod="h", head_ready=True, head_label="true",
                   proxy_healthy=True, applied_config=CONFIG, apps=RUNNING_APPS)
    out = decide(seen(doc, view))
    assert out.labels == [("h", "false")] and out.services_to is None


# ------------------------------------------------------------------ steady state


def test_steady_state_writes_nothing_and_polls() -> None:
    doc = body(active_status())
    out = decide(seen(doc, serving("svc-aaaaa", doc), serving_cluster="svc-aaaaa"))
    assert out.status is None
    assert (out.create_cluster, out.update_clusters, out.delete_clusters, out.labels,
            out.apply_config) == (None, [], [], [], [])
    assert out.services_to == "svc-aaaaa"  # kept pointing there (a no-op when it does)
    assert out.requeue_after == 2.0


def test_serve_config_change_alone_is_applied_in_place() -> None:
    doc = body(active_status(), serveConfigV2=CONFIG + "  route_prefix: /v2\n")
    out = decide(seen(doc, serving("svc-aaaaa", doc), serving_cluster="svc-aaaaa"))
    assert out.apply_config == ["svc-aaaaa"]
    assert out.create_cluster is None
    assert out.status is None or not out.status["pendingServiceStatus"]


def test_cluster_change_prepares_a_new_cluster_and_keeps_the_old_config() -> None:
    old = body(active_status())
    doc = body(active_status(), serveConfigV2=CONFIG + "  route_prefix: /v2\n")
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"] = "rayproject/ray:2.61.0"
    out = decide(seen(doc, serving("svc-aaaaa", old), serving_cluster="svc-aaaaa"))
    assert out.apply_config == []  # the active cluster keeps its config during the upgrade
    assert out.update_clusters == []
    assert out.status is not None
    assert out.status["pendingServiceStatus"] == {"rayClusterName": "svc-zzzzz"}
    upgrade = cond(out.status, "UpgradeInProgress")
    assert (upgrade["status"], upgrade["reason"]) == ("True", "BothActivePendingClustersExist")
    assert "svc-zzzzz takes no traffic yet: being created" in upgrade["message"]
    assert cond(out.status, "Ready")["status"] == "True"


def upgrading(doc: dict[str, Any]) -> dict[str, Any]:
    st = active_status()
    st["pendingServiceStatus"] = {"rayClusterName": "svc-bbbbb"}
    st["conditions"][1].update(status="True", reason="BothActivePendingClustersExist")
    return st


def new_spec() -> dict[str, Any]:
    doc = body()
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"] = "rayproject/ray:2.61.0"
    return doc


def test_upgrade_switches_to_the_new_cluster_once_it_serves() -> None:
    old = body()
    doc = new_spec()
    doc["status"] = upgrading(doc)
    pending = serving("svc-bbbbb", doc, head_label="false")
    out = decide(seen(doc, serving("svc-aaaaa", old), pending, serving_cluster="svc-aaaaa"))
    assert out.labels == [("svc-bbbbb-head", "true")]
    assert out.services_to != "svc-bbbbb"  # not until the new head's label is observed
    pending = serving("svc-bbbbb", doc, head_label="true")
    out = decide(seen(doc, serving("svc-aaaaa", old), pending, serving_cluster="svc-aaaaa"))
    assert out.labels == []
    assert out.services_to == "svc-bbbbb"
    st = out.status
    assert st is not None
    assert st["activeServiceStatus"]["rayClusterName"] == "svc-bbbbb"
    assert st["pendingServiceStatus"] == {}
    assert st["numServeEndpoints"] == 1
    assert cond(st, "UpgradeInProgress")["reason"] == "NoPendingCluster"
    # the old cluster is now neither: deleted rayClusterDeletionDelaySeconds later
    doc2 = copy.deepcopy(doc)
    doc2["status"] = st
    views = (serving("svc-aaaaa", old), serving("svc-bbbbb", doc))
    later = decide(seen(doc2, *views, serving_cluster="svc-bbbbb"))
    assert later.schedule == {"svc-aaaaa": NOW + timedelta(seconds=60)}
    assert later.delete_clusters == []
    when = later.schedule
    early = decide(seen(doc2, *views, serving_cluster="svc-bbbbb", deletions=when,
                        now=NOW + timedelta(seconds=59)))
    assert early.delete_clusters == [] and early.requeue_after == pytest.approx(1.0)
    due = decide(seen(doc2, *views, serving_cluster="svc-bbbbb", deletions=when,
                      now=NOW + timedelta(seconds=60)))
    assert due.delete_clusters == ["svc-aaaaa"]
    gone = decide(seen(doc2, serving("svc-bbbbb", doc), serving_cluster="svc-bbbbb",
                       deletions=when, now=NOW + timedelta(seconds=61)))
    assert gone.forget == ["svc-aaaaa"]


def test_deletion_delay_is_the_users() -> None:
    doc = body(active_status(), rayClusterDeletionDelaySeconds=5)
    out = decide(seen(doc, serving("svc-aaaaa", doc), serving("svc-old", doc),
                      serving_cluster="svc-aaaaa"))
    assert out.schedule == {"svc-old": NOW + timedelta(seconds=5)}


def test_broken_new_cluster_keeps_the_old_one_serving_and_says_why() -> None:
    old = body()
    doc = new_spec()
    doc["status"] = upgrading(doc)
    message = ("Traceback (most recent call last):\n  File ...\n"
               "ModuleNotFoundError: No module named 'gone'")
    pending = serving("svc-bbbbb", doc, head_label="false",
                      apps={"app": {"status": "DEPLOY_FAILED", "message": message}})
    out = decide(seen(doc, serving("svc-aaaaa", old), pending, serving_cluster="svc-aaaaa"))
    assert out.services_to is None  # nothing switches
    st = out.status
    assert st is not None
    assert st["activeServiceStatus"]["rayClusterName"] == "svc-aaaaa"
    assert st["pendingServiceStatus"]["applicationStatuses"]["app"]["status"] == "DEPLOY_FAILED"
    assert st["numServeEndpoints"] == 1 and cond(st, "Ready")["status"] == "True"
    upgrade = cond(st, "UpgradeInProgress")
    assert upgrade["message"].endswith(
        "the pending RayCluster svc-bbbbb takes no traffic yet: application app is "
        "DEPLOY_FAILED: ModuleNotFoundError: No module named 'gone'")
    assert ("Warning", "ServeApplicationFailed",
            "Serve application app on the RayCluster ns/svc-bbbbb is DEPLOY_FAILED: "
            "ModuleNotFoundError: No module named 'gone'") in out.events
    # a fixed config (same cluster spec) goes to the pending cluster, not the active one
    fixed = copy.deepcopy(doc)
    fixed["spec"]["serveConfigV2"] = CONFIG + "  route_prefix: /fixed\n"
    out = decide(seen(fixed, serving("svc-aaaaa", old), pending, serving_cluster="svc-aaaaa"))
    assert out.apply_config == ["svc-bbbbb"]


def test_reverted_spec_drops_the_pending_cluster() -> None:
    doc = body()  # the active cluster's spec again
    doc["status"] = upgrading(doc)
    pending = serving("svc-bbbbb", new_spec(), head_label="false",
                      apps={"app": {"status": "DEPLOY_FAILED", "message": "x"}})
    out = decide(seen(doc, serving("svc-aaaaa", body()), pending, serving_cluster="svc-aaaaa"))
    assert out.status is not None and out.status["pendingServiceStatus"] == {}
    assert cond(out.status, "UpgradeInProgress")["reason"] == "NoPendingCluster"
    assert out.apply_config == [] and out.services_to is None  # they point there already
    assert any(e[1] == "UpgradeCancelled" for e in out.events)
    # then it is neither active nor pending: deleted after the delay
    later = decide(seen(body(out.status), serving("svc-aaaaa", body()), pending,
                        serving_cluster="svc-aaaaa"))
    assert "svc-bbbbb" in later.schedule


def test_upgrade_strategy_none_keeps_the_cluster() -> None:
    doc = new_spec()
    doc["spec"]["upgradeStrategy"] = {"type": "None"}
    doc["spec"]["serveConfigV2"] = CONFIG + "  route_prefix: /v2\n"
    doc["status"] = active_status()
    out = decide(seen(doc, serving("svc-aaaaa", body()), serving_cluster="svc-aaaaa"))
    assert out.status is None or not out.status["pendingServiceStatus"]
    assert out.create_cluster is None and out.update_clusters == []
    assert out.apply_config == ["svc-aaaaa"]  # the Serve config still changes in place


def test_zero_downtime_env_false_keeps_the_cluster_unless_the_strategy_says() -> None:
    doc = new_spec()
    doc["status"] = active_status()
    out = decide(seen(doc, serving("svc-aaaaa", body()), serving_cluster="svc-aaaaa",
                      env="false"))
    assert out.status is None or not out.status["pendingServiceStatus"]
    doc["spec"]["upgradeStrategy"] = {"type": "NewCluster"}
    out = decide(seen(doc, serving("svc-aaaaa", body()), serving_cluster="svc-aaaaa",
                      env="false"))
    assert out.status is not None and out.status["pendingServiceStatus"]


def test_replicas_change_is_nothing_and_a_new_group_is_an_update_in_place() -> None:
    doc = body(active_status())
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(replicas=2, maxReplicas=9)
    active = serving("svc-aaaaa", body())
    out = decide(seen(doc, active, serving_cluster="svc-aaaaa"))
    assert out.update_clusters == [] and (out.status is None
                                          or not out.status["pendingServiceStatus"])
    grown = body(active_status())
    groups = grown["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    groups.append({**copy.deepcopy(groups[0]), "groupName": "g2"})
    out = decide(seen(grown, active, serving_cluster="svc-aaaaa"))
    assert out.update_clusters == ["svc-aaaaa"]
    assert out.status is None or not out.status["pendingServiceStatus"]


def test_cluster_of_another_operator_version_is_reannotated_in_place() -> None:
    doc = body(active_status())
    made_by_kuberay = serving("svc-aaaaa", doc, version="v1.7.0", hash="GOHASH")
    out = decide(seen(doc, made_by_kuberay, serving_cluster="svc-aaaaa"))
    assert out.update_clusters == ["svc-aaaaa"]
    assert out.status is None or not out.status["pendingServiceStatus"]  # no new cluster


def test_proxy_going_unhealthy_takes_the_head_out() -> None:
    doc = body(active_status())
    sick = serving("svc-aaaaa", doc, proxy_healthy=False)
    out = decide(seen(doc, sick, serving_cluster="svc-aaaaa"))
    assert out.labels == [("svc-aaaaa-head", "false")]
    st = out.status
    assert st is not None and st["numServeEndpoints"] == 0
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ZeroServeEndpoints")
    assert st["serviceStatus"] is None


def test_app_statuses_are_kept_while_the_dashboard_does_not_answer() -> None:
    doc = body(active_status())
    mute = serving("svc-aaaaa", doc, apps=None, serve_error="timed out")
    out = decide(seen(doc, mute, serving_cluster="svc-aaaaa"))
    assert out.status is None  # nothing KubeRay compares changed
    assert out.apply_config == []


# ----------------------------------------------------------------------- suspend


def test_suspend_then_resume() -> None:
    doc = body(active_status(), suspend=True)
    views = (serving("svc-aaaaa", doc),)
    out = decide(seen(doc, *views, serving_cluster="svc-aaaaa"))
    st = out.status
    assert st is not None and out.delete_clusters == []
    assert cond(st, "Suspending")["reason"] == "SuspendRequested"
    assert cond(st, "Ready")["reason"] == "SuspendInProgress"
    assert st["activeServiceStatus"] == {} and st["numServeEndpoints"] is None
    # committed: everything it owns is deleted (even if suspend is turned off meanwhile)
    doc2 = body(st, suspend=False)
    out = decide(seen(doc2, *views, serving_cluster="svc-aaaaa"))
    assert out.delete_clusters == ["svc-aaaaa"]
    assert out.delete_services == ["svc-head-svc", "svc-serve-svc"]
    assert out.status is not None
    assert cond(out.status, "Suspending")["reason"] == "SuspendInProgress"
    doc3 = body(out.status, suspend=False)
    out = decide(seen(doc3))
    st = out.status
    assert st is not None
    assert cond(st, "Suspended")["status"] == "True"
    assert cond(st, "Ready")["reason"] == "SuspendComplete"
    # resumed: initializing again, a first cluster named
    doc4 = body(st, suspend=False)
    out = decide(seen(doc4))
    st = out.status
    assert st is not None
    assert cond(st, "Suspended")["reason"] == "RayServiceResumed"
    assert cond(st, "Ready")["reason"] == "Initializing"
    assert st["pendingServiceStatus"] == {"rayClusterName": "svc-zzzzz"}


# ------------------------------------------------------------- initializing timeout


def test_initializing_timeout_fails_for_good() -> None:
    st = first_status()
    doc = body(st)
    doc["metadata"]["annotations"] = {"ray.io/initializing-timeout": "10m"}
    view = cluster("svc-zzzzz", doc, head_pod="h", head_ready=False)
    early = decide(seen(doc, view, now=NOW + timedelta(minutes=5)))
    assert early.status is None or cond(early.status, "Ready")["reason"] == "Initializing"
    late = decide(seen(doc, view, now=NOW + timedelta(minutes=10, seconds=1)))
    assert late.status is not None
    ready = cond(late.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InitializingTimeout")
    assert late.status["pendingServiceStatus"] == {}
    assert late.events[-1][1] == "RayServiceInitializingTimeout"
    # then its cluster goes, and nothing more happens
    doc2 = body(late.status)
    doc2["metadata"]["annotations"] = doc["metadata"]["annotations"]
    after = decide(seen(doc2, view, now=NOW + timedelta(minutes=11)))
    assert after.schedule == {"svc-zzzzz": NOW + timedelta(minutes=11, seconds=60)}
    assert after.create_cluster is None and after.status is None


def test_status_patch_removes_what_is_gone() -> None:
    old = {"activeServiceStatus": {"rayClusterName": "a", "applicationStatuses": {
        "x": {"status": "RUNNING"}}}, "numServeEndpoints": 1, "serviceStatus": "Running"}
    new = {"activeServiceStatus": {"rayClusterName": "b", "applicationStatuses": {
        "y": {"status": "RUNNING"}}}, "numServeEndpoints": 1, "serviceStatus": None}
    patch = status_patch(old, new)
    assert patch["serviceStatus"] is None
    assert patch["activeServiceStatus"]["applicationStatuses"] == {
        "x": None, "y": {"status": "RUNNING"}}


def test_decision_requeue_takes_the_soonest() -> None:
    out = Decision()
    out.soon(2.0)
    out.soon(0.5)
    out.soon(1.0)
    assert out.requeue_after == 0.5
