"""The RayJob state machine and manifests (pure: no cluster, no Ray)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rayscale.api.rayjob import RayJobStatus
from rayscale.operator.rayjob_decide import (
    GRACE_PERIOD_MESSAGE,
    ClusterView,
    Observed,
    RayJobView,
    SubmitterView,
    decide,
    job_submitter_view,
    sidecar_submitter_view,
    status_check_timeout_s,
    transition_grace_period_s,
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
         submitter_exists: bool = False, now: datetime = NOW, **more: Any) -> Observed:
    job, invalid = validate(body)
    return Observed(body=body, job=job, invalid=invalid, cluster=cluster, submitter=submitter,
                    submitter_exists=submitter_exists or submitter is not None, ray_job=ray,
                    now=now, new_suffix="abcde", **more)


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
    # a job its user stopped ended, it did not fail: Complete, no retry, not a success
    d = decide(seen(body, cluster=READY, ray=RayJobView("STOPPED", "stopped by user"),
                    submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Complete" and d.status["reason"] is None
    assert "succeeded" not in d.status and "failed" not in d.status


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


# --------------------------------------- KubeRay's timeouts and submitter checks

GRACE = "JobDeploymentStatusTransitionGracePeriodExceeded"
CHECK = "JobStatusCheckTimeoutExceeded"


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_a_submitter_mode_ends_only_once_its_submitter_finished() -> None:
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING")
    ray = RayJobView("SUCCEEDED", "done", start_time_ms=1, end_time_ms=1_795_000_000_000)
    d = decide(seen(body, cluster=READY, ray=ray, submitter=SubmitterView()))  # still running
    assert "jobDeploymentStatus" not in d.status
    assert d.status["jobStatus"] == "SUCCEEDED" and d.status["rayJobInfo"]["endTime"]
    d = decide(seen(body, cluster=READY, ray=ray, submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Complete"
    http = with_status(sample(submissionMode="HTTPMode"), jobDeploymentStatus="Running")
    assert decide(seen(http, cluster=READY, ray=ray)).status["jobDeploymentStatus"] == "Complete"


def test_submitter_finished_timeout() -> None:
    """checkSubmitterFinishedTimeoutAndUpdateStatusIfNeeded: 30 s after the submitter
    finished, a RayJob still Running fails (Ray's status unknown or not terminal)."""
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING")
    finished = SubmitterView(finished_at=NOW)
    d = decide(seen(body, cluster=READY, ray=RayJobView("RUNNING"), submitter=finished,
                    now=later(29)))
    assert "jobDeploymentStatus" not in d.status  # not before the timeout
    for ray, more in ((RayJobView("RUNNING"), {}), (None, {"ray_job_error": "refused"})):
        d = decide(seen(body, cluster=READY, ray=ray, submitter=finished, now=later(30), **more))
        assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == GRACE
        assert d.status["jobStatus"] == "FAILED" and d.status["failed"] == 1
        assert d.status["message"] == ("The RayJob submitter finished at 2026-11-28 12:00:00 "
                                       "but the ray job did not reach terminal state within 30s")
    # it comes before a failed submitter's own reason, as in KubeRay
    failed = SubmitterView(failed=True, reason="BackoffLimitExceeded", finished_at=NOW)
    d = decide(seen(body, cluster=READY, submitter=failed, now=later(31)))
    assert d.status["reason"] == GRACE
    # retried like any failure but DeadlineExceeded and JobStatusCheckTimeoutExceeded
    retry = with_status(sample(backoffLimit=1), jobDeploymentStatus="Running")
    d = decide(seen(retry, cluster=READY, submitter=finished, now=later(30)))
    assert d.status["jobDeploymentStatus"] == "Retrying" and d.status["reason"] == GRACE
    # SidecarMode: the head pod's submitter container, exit code 0
    side = with_status(sample(submissionMode="SidecarMode"), jobDeploymentStatus="Running")
    d = decide(seen(side, cluster=READY, ray=RayJobView("RUNNING"),
                    submitter=SubmitterView(exit_code=0, finished_at=NOW), now=later(30)))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == GRACE


def test_transition_grace_period() -> None:
    """checkTransitionGracePeriodAndUpdateStatusIfNeeded: Ray's job is terminal (jobStatus)
    but the RayJob is still Running (its submitter never finished) for the grace period
    past rayJobInfo.endTime: Complete, or Failed for FAILED, with the grace reason."""
    info = {"startTime": "2026-11-28T11:59:00Z", "endTime": "2026-11-28T12:00:00Z"}
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="SUCCEEDED",
                       rayJobInfo=info, message="done")
    ray = RayJobView("SUCCEEDED", "done")
    running = SubmitterView()
    d = decide(seen(body, cluster=READY, ray=ray, submitter=running, now=later(299)))
    assert d.status == {}  # not before the grace period
    d = decide(seen(body, cluster=READY, ray=ray, submitter=running, now=later(300)))
    assert d.status["jobDeploymentStatus"] == "Complete" and d.status["reason"] == GRACE
    assert d.status["message"] == GRACE_PERIOD_MESSAGE and d.status["succeeded"] == 1
    body["status"]["jobStatus"] = "FAILED"
    d = decide(seen(body, cluster=READY, submitter=running, now=later(300)))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == GRACE
    body["status"]["jobStatus"] = "STOPPED"
    d = decide(seen(body, cluster=READY, submitter=running, now=later(300)))
    assert d.status["jobDeploymentStatus"] == "Complete" and "succeeded" not in d.status
    d = decide(seen(body, cluster=READY, submitter=running, now=later(10),
                    transition_grace_period_s=10))
    assert d.status["reason"] == GRACE
    no_end = with_status(sample(), jobDeploymentStatus="Running", jobStatus="SUCCEEDED")
    d = decide(seen(no_end, cluster=READY, submitter=running, now=later(3600)))
    assert "jobDeploymentStatus" not in d.status  # no endTime: KubeRay's nil guard


def test_job_status_check_failures_are_timed_and_cleared() -> None:
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING")
    d = decide(seen(body, cluster=READY, ray_job_error="connection refused"))
    assert d.status == {"jobStatusCheckFailureStartTime": "2026-11-28T12:00:00Z"}
    assert d.requeue_after
    failing = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING",
                          jobStatusCheckFailureStartTime="2026-11-28T12:00:00Z")
    d = decide(seen(failing, cluster=READY, ray_job_error="refused", now=later(100)))
    assert d.status == {}  # the first failure's time is kept
    d = decide(seen(failing, cluster=READY, ray=RayJobView("RUNNING"), submitter_exists=True,
                    now=later(100)))
    assert d.status == {"jobStatusCheckFailureStartTime": None}  # answered: cleared
    d = decide(seen(failing, cluster=READY, ray_job_missing=True, submitter_exists=True,
                    now=later(100)))
    assert d.status == {}  # "no such job" is an answer, neither recorded nor cleared
    d = decide(seen(body, cluster=READY, ray_job_missing=True, submitter_exists=True))
    assert d.status == {}
    d = decide(seen(failing, cluster=READY, ray_job_error="refused", now=later(299)))
    assert "jobDeploymentStatus" not in d.status  # not before the timeout
    d = decide(seen(failing, cluster=READY, ray_job_error="refused", now=later(300)))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == CHECK
    assert d.status["message"] == ("Job status checks have been failing since "
                                   "2026-11-28 12:00:00; exceeded timeout of 300s")
    d = decide(seen(failing, cluster=READY, ray_job_error="refused", now=later(60),
                    status_check_timeout_s=60))
    assert d.status["reason"] == CHECK and d.status["message"].endswith("timeout of 60s")
    # KubeRay checks the timeout before asking again: a late answer does not save it
    d = decide(seen(failing, cluster=READY, ray=RayJobView("RUNNING"), now=later(300)))
    assert d.status["reason"] == CHECK


def test_status_check_timeout_and_deadline_are_never_retried() -> None:
    failing = with_status(sample(backoffLimit=2), jobDeploymentStatus="Running",
                          jobStatusCheckFailureStartTime="2026-11-28T12:00:00Z")
    d = decide(seen(failing, cluster=READY, ray_job_error="refused", now=later(300)))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["failed"] == 1
    deadline = with_status(sample(backoffLimit=2, activeDeadlineSeconds=30),
                           jobDeploymentStatus="Running")
    d = decide(seen(deadline, cluster=READY, ray=RayJobView("RUNNING"), now=later(61)))
    assert d.status["jobDeploymentStatus"] == "Failed"
    assert d.status["reason"] == "DeadlineExceeded"
    # other failures are retried: a Ray job that FAILED, with the same backoffLimit
    body = with_status(sample(backoffLimit=2), jobDeploymentStatus="Running")
    d = decide(seen(body, cluster=READY, ray=RayJobView("FAILED"), submitter=DONE))
    assert d.status["jobDeploymentStatus"] == "Retrying"


def test_the_failure_clock_is_reset_with_the_cluster() -> None:
    body = with_status(sample(backoffLimit=1), jobDeploymentStatus="Retrying", failed=1,
                       jobStatusCheckFailureStartTime="2026-11-28T12:00:00Z")
    d = decide(seen(body))
    assert d.status["jobDeploymentStatus"] == ""
    assert d.status["jobStatusCheckFailureStartTime"] is None
    parsed = RayJobStatus.model_validate({"jobStatusCheckFailureStartTime":
                                          "2026-11-28T12:00:00Z"})
    assert parsed.job_status_check_failure_start_time == "2026-11-28T12:00:00Z"


def test_timeout_env_vars_as_kuberay_reads_them() -> None:
    grace = "RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS"
    check = "RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS"
    assert transition_grace_period_s({}) == 300 and status_check_timeout_s({}) == 300
    assert transition_grace_period_s({grace: "10"}) == 10
    assert transition_grace_period_s({grace: "ten"}) == 300
    assert transition_grace_period_s({grace: " 10"}) == 300  # strconv.Atoi: no spaces
    assert transition_grace_period_s({grace: "0"}) == 0  # KubeRay takes any integer here
    assert status_check_timeout_s({check: "60"}) == 60
    assert status_check_timeout_s({check: "+60"}) == 60
    for bad in ("0", "-5", "1.5", "", "6_0"):
        assert status_check_timeout_s({check: bad}) == 300, bad


def test_k8s_job_mode_submitter_failure() -> None:
    body = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING")
    failed = SubmitterView(failed=True, reason="BackoffLimitExceeded",
                           message="Job has reached the specified backoff limit",
                           finished_at=NOW)
    d = decide(seen(body, cluster=READY, submitter=failed, ray=RayJobView("SUCCEEDED")))
    assert d.status["jobDeploymentStatus"] == "Failed"
    assert d.status["reason"] == "SubmissionFailed"
    assert d.status["message"] == ("Job submission has failed. Reason: BackoffLimitExceeded. "
                                   "Message: Job has reached the specified backoff limit")
    app = with_status(sample(), jobDeploymentStatus="Running", jobStatus="FAILED",
                      message="Job entrypoint command failed with exit code 1")
    d = decide(seen(app, cluster=READY, submitter=failed))
    assert d.status["reason"] == "AppFailed"
    assert d.status["message"] == "Job entrypoint command failed with exit code 1"
    # the submitter finished and the dashboard has no such job
    d = decide(seen(body, cluster=READY, submitter=DONE, ray_job_missing=True))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == "AppFailed"
    assert d.status["message"] == "Submitter completed but Ray job not found in RayCluster."


def test_sidecar_mode_submitter_failure() -> None:
    """checkSidecarContainerStatus: the head pod's ray-job-submitter container
    terminated with a non-zero exit code -> Failed (SubmissionFailed, or AppFailed when
    Ray already said FAILED); no head pod -> Failed (AppFailed)."""
    body = with_status(sample(submissionMode="SidecarMode"), jobDeploymentStatus="Running",
                       jobStatus="RUNNING")
    crashed = SubmitterView(failed=True, reason="Error", exit_code=1,
                            container="ray-job-submitter", finished_at=NOW)
    d = decide(seen(body, cluster=READY, submitter=crashed, ray=RayJobView("RUNNING")))
    assert d.status["jobDeploymentStatus"] == "Failed"
    assert d.status["reason"] == "SubmissionFailed"
    assert d.status["message"] == ("Ray head pod container ray-job-submitter terminated with "
                                   "exit code 1: Error")
    app = with_status(sample(submissionMode="SidecarMode"), jobDeploymentStatus="Running",
                      jobStatus="FAILED", message="boom")
    d = decide(seen(app, cluster=READY, submitter=crashed))
    assert d.status["reason"] == "AppFailed" and d.status["message"] == "boom"
    d = decide(seen(body, cluster=READY, submitter=SubmitterView(), ray=RayJobView("RUNNING")))
    assert "jobDeploymentStatus" not in d.status  # still running: nothing
    d = decide(seen(body, cluster=READY, head_pod_missing=True))
    assert d.status["jobDeploymentStatus"] == "Failed" and d.status["reason"] == "AppFailed"
    assert d.status["message"] == "Ray head pod not found."
    ok = SubmitterView(exit_code=0, container="ray-job-submitter", finished_at=NOW)
    d = decide(seen(body, cluster=READY, submitter=ok, ray=RayJobView("SUCCEEDED")))
    assert d.status["jobDeploymentStatus"] == "Complete"


def test_submitter_views_from_the_job_and_the_head_pod() -> None:
    job = {"status": {"conditions": [
        {"type": "FailureTarget", "status": "True", "lastTransitionTime": "2026-11-28T11:00:00Z"},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit",
         "lastTransitionTime": "2026-11-28T12:00:00Z"}]}}
    view = job_submitter_view(job)
    assert view.failed and view.reason == "BackoffLimitExceeded" and view.finished_at == NOW
    done = job_submitter_view({"status": {"conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-28T12:00:00Z"}]}})
    assert not done.failed and done.finished_at == NOW
    assert job_submitter_view({"status": {}}) == SubmitterView()

    def pod(state: dict[str, Any]) -> dict[str, Any]:
        return {"status": {"containerStatuses": [
            {"name": "ray-head", "state": {"terminated": {"exitCode": 2}}},
            {"name": "ray-job-submitter", "state": state}]}}

    crashed = sidecar_submitter_view(pod({"terminated": {
        "exitCode": 1, "reason": "Error", "finishedAt": "2026-11-28T12:00:00Z"}}))
    assert crashed.failed and crashed.exit_code == 1 and crashed.reason == "Error"
    assert crashed.container == "ray-job-submitter" and crashed.finished_at == NOW
    ok = sidecar_submitter_view(pod({"terminated": {"exitCode": 0, "reason": "Completed",
                                                    "finishedAt": "2026-11-28T12:00:00Z"}}))
    assert not ok.failed and ok.finished_at == NOW
    running = sidecar_submitter_view(pod({"running": {"startedAt": "2026-11-28T11:00:00Z"}}))
    assert running == SubmitterView()


def test_http_mode_submits_again_when_the_dashboard_lost_the_job() -> None:
    """reconcileHTTPModeJobNotFound: submit again; a failed submission starts the status
    check failure clock, a successful one stops it."""
    body = with_status(sample(submissionMode="HTTPMode"), jobDeploymentStatus="Running",
                       jobStatus="RUNNING")
    d = decide(seen(body, cluster=READY, ray_job_missing=True))
    assert d.resubmit_http and d.status == {}
    assert d.after_resubmit == {
        True: {}, False: {"jobStatusCheckFailureStartTime": "2026-11-28T12:00:00Z"}}
    failing = with_status(sample(submissionMode="HTTPMode"), jobDeploymentStatus="Running",
                          jobStatusCheckFailureStartTime="2026-11-28T12:00:00Z")
    d = decide(seen(failing, cluster=READY, ray_job_missing=True, now=later(10)))
    assert d.after_resubmit == {True: {"jobStatusCheckFailureStartTime": None}, False: {}}
    d = decide(seen(failing, cluster=READY, ray_job_missing=True, now=later(300)))
    assert not d.resubmit_http and d.status["reason"] == CHECK
    k8s = with_status(sample(), jobDeploymentStatus="Running", jobStatus="RUNNING")
    assert not decide(seen(k8s, cluster=READY, ray_job_missing=True,
                           submitter_exists=True)).resubmit_http
