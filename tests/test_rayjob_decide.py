"""The RayJob state machine and manifests (pure: no cluster, no Ray)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rayscale.api.rayjob import RayJobStatus
from rayscale.operator.rayjob_decide import (
    ClusterView,
    Observed,
    RayJobView,
    SubmitterView,
    decide,
    validate,
)
from rayscale.operator.rayjob_desired import (
    SUBMITTER_PROGRAM,
    ray_cluster,
    submit_options,
    submitter_job,
)
from rayscale.spec import parse_cluster_spec

SAMPLE = Path(__file__).parent / "k8s" / "operator" / "kuberay" / "ray-job.sample.yaml"
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def sample(**spec: Any) -> dict[str, Any]:
    doc = next(yaml.safe_load_all(SAMPLE.read_text()))
    doc["metadata"].update(namespace="ns", uid="u-1", generation=1)
    doc["spec"].update(spec)
    return dict(doc)


def seen(body: dict[str, Any], cluster: ClusterView | None = None,
         ray: RayJobView | None = None, submitter: SubmitterView | None = None,
         submitter_exists: bool = False, now: datetime = NOW) -> Observed:
    job, invalid = validate(body)
    return Observed(body=body, job=job, invalid=invalid, cluster=cluster, submitter=submitter,
                    submitter_exists=submitter_exists or submitter is not None, ray_job=ray,
                    now=now, new_suffix="abcde")


def with_status(body: dict[str, Any], **status: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["status"] = {"jobId": "rayjob-sample-x", "rayClusterName": "rayjob-sample-abcde",
                     "startTime": "2026-11-28T11:59:00Z", **status}
    return out


READY = ClusterView(name="rayjob-sample-abcde", state="ready",
                    dashboard_url="rayjob-sample-abcde-head-svc.ns.svc.cluster.local:8265")
#: a submitter Job that completed a second ago (the RayJob ends only once it did)
DONE = SubmitterView(finished_at=NOW - timedelta(seconds=1))


def test_the_sample_is_valid_and_starts_initializing() -> None:
    d = decide(seen(sample()))
    assert d.status["jobDeploymentStatus"] == "Initializing"
    assert d.status["rayClusterName"] == "rayjob-sample-abcde"
    assert d.status["jobId"] == "rayjob-sample-abcde"
    assert d.status["startTime"] == "2026-11-28T12:00:00Z"


def test_spec_job_id_is_kept() -> None:
    d = decide(seen(sample(jobId="mine")))
    assert d.status["jobId"] == "mine"


def test_invalid_specs_name_the_field() -> None:
    cases = {
        "spec.suspend": sample(suspend=True),
        "spec.rayClusterSpec": {**sample(), "spec": {"entrypoint": "x"}},
        "spec.backoffLimit": sample(clusterSelector={"ray.io/cluster": "c"}, backoffLimit=1),
        "spec.runtimeEnvYAML": sample(runtimeEnvYAML="[1, 2"),
        "spec.entrypoint": sample(entrypoint=" "),
        "entrypoint: cannot be split": sample(entrypoint="python -c 'x"),
        "metadata.name": {**sample(), "metadata": {"name": "x" * 48, "namespace": "ns"}},
    }
    for field, body in cases.items():
        d = decide(seen(body))
        assert d.status["jobDeploymentStatus"] == "ValidationFailed", field
        assert field in d.status["message"], (field, d.status["message"])
        assert d.events and d.events[0][0] == "Warning" and field in d.events[0][2]
    bad = sample()
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = 0
    d = decide(seen(bad))
    assert "maxReplicas" in d.status["message"]


def test_suspended_before_start_creates_nothing() -> None:
    d = decide(seen(sample(suspend=True, shutdownAfterJobFinishes=True)))
    assert d.status == {"jobDeploymentStatus": "Suspended"}
    assert d.create_cluster is None


def test_initializing_creates_the_cluster_then_submits_when_ready() -> None:
    body = with_status(sample(), jobDeploymentStatus="Initializing")
    d = decide(seen(body))
    assert d.create_cluster == "rayjob-sample-abcde" and "jobDeploymentStatus" not in d.status
    d = decide(seen(body, cluster=ClusterView(name="rayjob-sample-abcde")))
    assert d.create_cluster is None and not d.create_submitter and d.status == {}
    d = decide(seen(body, cluster=READY))
    assert d.create_submitter and d.status["jobDeploymentStatus"] == "Running"
    assert d.status["dashboardURL"] == READY.dashboard_url
    d = decide(seen(with_status(sample(submissionMode="HTTPMode"),
                                jobDeploymentStatus="Initializing"), cluster=READY))
    assert d.submit_http and not d.create_submitter


def test_running_follows_ray_to_complete_or_failed() -> None:
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="")
    d = decide(seen(body, cluster=READY, ray=RayJobView("RUNNING"), submitter_exists=True))
    assert d.status["jobStatus"] == "RUNNING" and d.requeue_after
    d = decide(seen(body, cluster=READY, ray=RayJobView("SUCCEEDED", "done"), submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Complete" and d.status["succeeded"] == 1
    assert d.status["endTime"] == "2026-11-28T12:00:00Z"
    d = decide(seen(body, cluster=READY, ray=RayJobView("FAILED", "exit code 1"), submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == "AppFailed"
    assert d.status["message"] == "exit code 1" and d.status["failed"] == 1
    d = decide(seen(body, cluster=READY, submitter=SubmitterView(failed=True, message="x")))
    assert d.status["reason"] == "SubmissionFailed"


def test_backoff_limit_retries_on_a_fresh_cluster() -> None:
    body = with_status(sample(backoffLimit=1), jobDeploymentStatus="Running")
    d = decide(seen(body, cluster=READY, ray=RayJobView("FAILED"), submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Retrying" and d.status["failed"] == 1
    body = with_status(sample(backoffLimit=1), jobDeploymentStatus="Retrying", failed=1)
    d = decide(seen(body, cluster=READY, submitter_exists=True))
    assert d.delete_cluster == READY.name and d.delete_submitter
    d = decide(seen(body))
    assert d.status["jobDeploymentStatus"] == "" and d.status["rayClusterName"] is None
    body = with_status(sample(backoffLimit=1), jobDeploymentStatus="Running", failed=1)
    d = decide(seen(body, cluster=READY, ray=RayJobView("FAILED"), submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["failed"] == 2


def test_active_deadline() -> None:
    body = with_status(sample(activeDeadlineSeconds=30), jobDeploymentStatus="Running")
    d = decide(seen(body, cluster=READY, ray=RayJobView("RUNNING"), submitter_exists=True,
                    now=NOW + timedelta(seconds=31)))
    assert d.status["jobDeploymentStatus"] == "Failed"
    assert d.status["reason"] == "DeadlineExceeded" and d.stop_ray_job


def test_shutdown_after_ttl_and_never_a_selected_cluster() -> None:
    spec = {"shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 10}
    body = with_status(sample(**spec), jobDeploymentStatus="Complete",
                       endTime="2026-11-28T12:00:00Z")
    d = decide(seen(body, cluster=READY, submitter_exists=True, now=NOW + timedelta(seconds=4)))
    assert d.delete_cluster is None and d.requeue_after == 6
    d = decide(seen(body, cluster=READY, submitter_exists=True, now=NOW + timedelta(seconds=10)))
    assert d.delete_cluster == READY.name and d.delete_submitter
    selected = with_status({**sample(**spec)}, jobDeploymentStatus="Complete",
                           endTime="2026-11-28T12:00:00Z")
    selected["spec"].pop("rayClusterSpec")
    selected["spec"]["clusterSelector"] = {"ray.io/cluster": "theirs"}
    d = decide(seen(selected, cluster=READY, now=NOW + timedelta(seconds=60)))
    assert d.delete_cluster is None


def test_suspend_a_running_job_then_resume() -> None:
    spec = {"shutdownAfterJobFinishes": True, "suspend": True}
    body = with_status(sample(**spec), jobDeploymentStatus="Running")
    d = decide(seen(body, cluster=READY, submitter_exists=True))
    assert d.status["jobDeploymentStatus"] == "Suspending"
    body = with_status(sample(**spec), jobDeploymentStatus="Suspending")
    assert decide(seen(body, cluster=READY, submitter_exists=True)).delete_cluster == READY.name
    d = decide(seen(body))
    assert d.status["jobDeploymentStatus"] == "Suspended" and d.status["jobId"] is None
    resumed = with_status(sample(shutdownAfterJobFinishes=True), jobDeploymentStatus="Suspended")
    assert decide(seen(resumed)).status["jobDeploymentStatus"] == ""


def test_cluster_manifest_and_submitter_job() -> None:
    body = with_status(sample(), jobDeploymentStatus="Initializing")
    cluster = ray_cluster(body, "rayjob-sample-abcde")
    assert cluster["metadata"]["labels"] == {"ray.io/originated-from-crd": "RayJob",
                                             "ray.io/originated-from-cr-name": "rayjob-sample"}
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert cluster["spec"] == body["spec"]["rayClusterSpec"]
    cluster["metadata"].update(namespace="ns")
    cluster["spec"]["authOptions"] = {"mode": "token"}
    model = parse_cluster_spec(cluster)
    job, _ = validate(body)
    assert job is not None
    manifest = submitter_job(body, job, model, "id-1", "http://svc:8265", python="/py")
    assert manifest["metadata"]["name"] == "rayjob-sample"
    assert manifest["spec"]["backoffLimit"] == 2
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:5] == ["/py", "-c", SUBMITTER_PROGRAM, "http://svc:8265",
                                        "id-1"]
    assert container["command"][-3:] == ["--", "python", "/home/ray/samples/sample_code.py"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "rayjob-sample-abcde", "key": "auth_token"}
    opts = submit_options(job)
    assert opts[0] == "--runtime-env-json" and '"counter_name": "test_counter"' in opts[1]


def test_pre_running_deadline() -> None:
    body = with_status(sample(preRunningDeadlineSeconds=30), jobDeploymentStatus="Initializing")
    d = decide(seen(body, cluster=ClusterView(name="c"), now=NOW + timedelta(seconds=61)))
    assert d.status["jobDeploymentStatus"] == "Failed"
    assert d.status["reason"] == "PreRunningDeadlineExceeded"
    running = with_status(sample(preRunningDeadlineSeconds=30), jobDeploymentStatus="Running")
    d = decide(seen(running, cluster=READY, ray=RayJobView("RUNNING"), submitter_exists=True,
                    now=NOW + timedelta(seconds=61)))
    assert d.status.get("jobDeploymentStatus") is None


def test_interactive_mode_waits_for_the_job_id() -> None:
    d = decide(seen(sample(submissionMode="InteractiveMode")))
    assert d.status["jobId"] is None
    body = with_status(sample(submissionMode="InteractiveMode"), jobDeploymentStatus="Initializing",
                       jobId=None)
    d = decide(seen(body, cluster=READY))
    assert d.status["jobDeploymentStatus"] == "Waiting" and not d.create_submitter
    body = with_status(sample(submissionMode="InteractiveMode"), jobDeploymentStatus="Waiting",
                       jobId=None)
    assert decide(seen(body, cluster=READY)).status == {}
    body["spec"]["jobId"] = "mine"
    d = decide(seen(body, cluster=READY))
    assert d.status == {"jobId": "mine", "jobDeploymentStatus": "Running"}


RULES = [{"policy": "DeleteWorkers", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 0}},
         {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 20}},
         {"policy": "DeleteSelf", "condition": {"jobDeploymentStatus": "Failed",
                                                "ttlSeconds": 0}}]


def test_deletion_rules_most_impactful_due_rule_first() -> None:
    body = with_status(sample(deletionStrategy={"deletionRules": RULES}),
                       jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                       endTime="2026-11-28T12:00:00Z")
    d = decide(seen(body, cluster=READY, submitter_exists=True))
    assert d.suspend_workers and d.delete_cluster is None and d.requeue_after == 20
    suspended = ClusterView(name=READY.name, state="ready", workers_suspended=True)
    d = decide(seen(body, cluster=suspended, now=NOW + timedelta(seconds=5)))
    assert not d.suspend_workers and d.requeue_after == 15
    d = decide(seen(body, cluster=READY, submitter_exists=True,
                    now=NOW + timedelta(seconds=30)))
    assert d.delete_cluster == READY.name and not d.suspend_workers  # the more impactful
    failed = with_status(sample(deletionStrategy={"deletionRules": RULES}),
                         jobDeploymentStatus="Failed", jobStatus="FAILED",
                         endTime="2026-11-28T12:00:00Z")
    assert decide(seen(failed, cluster=READY)).delete_self


def test_legacy_on_success_on_failure() -> None:
    strategy = {"onSuccess": {"policy": "DeleteWorkers"}, "onFailure": {"policy": "DeleteNone"}}
    body = with_status(sample(deletionStrategy=strategy), jobDeploymentStatus="Complete",
                       jobStatus="SUCCEEDED", endTime="2026-11-28T12:00:00Z")
    assert decide(seen(body, cluster=READY)).suspend_workers
    body["status"]["jobStatus"] = "FAILED"
    d = decide(seen(body, cluster=READY))
    assert not d.suspend_workers and d.delete_cluster is None


def test_deletion_strategy_validation() -> None:
    cases = {
        "mutually exclusive": sample(shutdownAfterJobFinishes=True,
                                     deletionStrategy={"deletionRules": RULES}),
        "must both set": sample(deletionStrategy={"onSuccess": {"policy": "DeleteSelf"}}),
        "requires either": sample(deletionStrategy={}),
        "duplicate": sample(deletionStrategy={"deletionRules": [RULES[0], RULES[0]]}),
        "exactly one": sample(deletionStrategy={"deletionRules": [
            {"policy": "DeleteSelf", "condition": {"ttlSeconds": 1}}]}),
        "ttlSecondsAfterFinished": sample(ttlSecondsAfterFinished=10),
    }
    for words, body in cases.items():
        job, problem = validate(body)
        assert job is None and problem is not None and words in problem, (words, problem)


def test_sidecar_mode_puts_the_submitter_in_the_head_pod() -> None:
    body = with_status(sample(submissionMode="SidecarMode"), jobDeploymentStatus="Initializing")
    job, problem = validate(body)
    assert job is not None, problem
    cluster = ray_cluster(body, "c-1", job, "id-1", "/py", shared_network=True)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["restartPolicy"] == "Never"
    submitter = head["containers"][-1]
    assert submitter["name"] == "ray-job-submitter"
    assert submitter["command"][3:5] == ["http://$(POD_IP):8265", "id-1"]
    d = decide(seen(body, cluster=READY))
    assert d.status["jobDeploymentStatus"] == "Running" and not d.create_submitter
    assert not d.submit_http
    bad = sample(submissionMode="SidecarMode")
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert "restartPolicy" in (validate(bad)[1] or "")


# ------------------------------------------------------- status.rayClusterStatus

PROVISIONING = {"desiredWorkerReplicas": 1, "minWorkerReplicas": 1, "maxWorkerReplicas": 5,
                "readyWorkerReplicas": 0, "availableWorkerReplicas": 0,
                "lastUpdateTime": "2026-11-28T11:59:30Z",
                "endpoints": {"dashboard": "8265", "client": "10001"},
                "head": {"podName": "rayjob-sample-abcde-head-x", "podIP": "10.0.0.7"},
                "conditions": [{"type": "HeadPodReady", "status": "False",
                                "reason": "ContainersNotReady",
                                "lastTransitionTime": "2026-11-28T11:59:10Z"}]}
RUNNING_CLUSTER = {**PROVISIONING, "state": "ready", "readyWorkerReplicas": 1,
                   "availableWorkerReplicas": 1,
                   "conditions": [{"type": "HeadPodReady", "status": "True",
                                   "reason": "HeadPodRunningAndReady",
                                   "lastTransitionTime": "2026-11-28T11:59:40Z"}]}


def _apply(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch applied as the API server does (RFC 7396)."""
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        else:
            out[key] = value
    return out


def test_the_cluster_status_is_mirrored_while_initializing_and_running() -> None:
    body = with_status(sample(), jobDeploymentStatus="Initializing")
    pending = ClusterView(name=READY.name, status=PROVISIONING)
    d = decide(seen(body, cluster=pending))
    assert d.status == {"rayClusterStatus": PROVISIONING}  # not ready yet: only this
    # what the API server then holds is the cluster's status, and parses as KubeRay's type
    mirrored = RayJobStatus.model_validate({"rayClusterStatus": PROVISIONING})
    assert mirrored.ray_cluster_status is not None
    assert mirrored.ray_cluster_status.desired_worker_replicas == 1
    body["status"]["rayClusterStatus"] = PROVISIONING
    assert decide(seen(body, cluster=pending)).status == {}  # unchanged: no write
    later = ClusterView(name=READY.name, status={**PROVISIONING,
                                                 "lastUpdateTime": "2026-11-28T12:00:00Z"})
    assert decide(seen(body, cluster=later)).status == {}  # KubeRay ignores lastUpdateTime
    ready = ClusterView(name=READY.name, state="ready", dashboard_url=READY.dashboard_url,
                        status=RUNNING_CLUSTER)
    d = decide(seen(body, cluster=ready))
    assert d.status["jobDeploymentStatus"] == "Running"
    assert _apply(PROVISIONING, d.status["rayClusterStatus"]) == RUNNING_CLUSTER
    assert d.status["rayClusterStatus"]["state"] == "ready"


def test_the_last_write_of_a_run_carries_the_cluster_status_then_it_stays() -> None:
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING",
                       rayClusterStatus=RUNNING_CLUSTER)
    fewer = {k: v for k, v in RUNNING_CLUSTER.items() if k != "endpoints"}
    fewer["head"] = {"podName": "rayjob-sample-abcde-head-x"}
    cluster = ClusterView(name=READY.name, state="ready", status={**fewer, "reason": "gone"})
    d = decide(seen(body, cluster=cluster, ray=RayJobView("SUCCEEDED"), submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Complete"
    patch = d.status["rayClusterStatus"]
    assert patch["endpoints"] is None and patch["head"]["podIP"] is None  # removed
    assert _apply(RUNNING_CLUSTER, patch) == {**fewer, "reason": "gone"}
    done = with_status(sample(), jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                       rayClusterStatus=RUNNING_CLUSTER, endTime="2026-11-28T12:00:00Z")
    changed = ClusterView(name=READY.name, state="suspended", status={"state": "suspended"})
    assert "rayClusterStatus" not in decide(seen(done, cluster=changed)).status
    deleting = ClusterView(name=READY.name, state="ready", deleting=True, status=PROVISIONING)
    assert "rayClusterStatus" not in decide(seen(body, cluster=deleting)).status


def test_the_cluster_status_is_reset_with_the_cluster() -> None:
    body = with_status(sample(backoffLimit=1), jobDeploymentStatus="Retrying", failed=1,
                       rayClusterStatus=RUNNING_CLUSTER)
    d = decide(seen(body))
    assert d.status["jobDeploymentStatus"] == "" and d.status["rayClusterStatus"] is None
