"""The RayJob state machine: what to do next, from what is observed (pure, no I/O).

KubeRay v1.7's ``jobDeploymentStatus`` transitions (``rayjob_controller.go``):

- ``""`` (new): suspended -> ``Suspended``; else ``Initializing`` with a job id
  (``spec.jobId`` or ``<job>-<5 random>``), the cluster's name and ``startTime``;
- ``Initializing``: create the RayCluster (or use the ``clusterSelector``'s);
  when its ``status.state`` is ``ready``: the dashboard URL, then submit (the
  submitter Job, or the dashboard's job API in HTTPMode) -> ``Running``;
- ``Waiting`` (InteractiveMode, the cluster ready): until ``spec.jobId`` names
  the job the user submitted -> ``Running``;
- ``preRunningDeadlineSeconds`` past ``startTime`` before ``Running`` ->
  ``Failed`` (``PreRunningDeadlineExceeded``);
- ``Running``: Ray's job status into ``jobStatus``; ``SUCCEEDED`` or
  ``STOPPED`` -> ``Complete`` (only a success counts in ``succeeded``),
  ``FAILED`` -> ``Failed`` (``AppFailed``, Ray's message), or ``Retrying``
  while ``failed < backoffLimit``; with a submitter
  (K8sJobMode's Job, SidecarMode's head pod container) only once it finished
  too (KubeRay PR 1919); a submitter Job that failed, or a sidecar submitter
  that exited non-zero -> ``Failed`` (``SubmissionFailed``, or ``AppFailed``
  when ``jobStatus`` is already ``FAILED``); SidecarMode without a head pod ->
  ``Failed`` (``AppFailed``); HTTPMode, the dashboard has no such job: submit it
  again (a failed submission is a status check failure);
- Running with timeouts (``rayjob_controller.go``): the submitter finished
  :data:`SUBMITTER_FINISHED_TIMEOUT_S` ago and the job is still Running ->
  ``Failed``, ``jobStatus: FAILED``
  (``JobDeploymentStatusTransitionGracePeriodExceeded``); ``jobStatus``
  terminal for ``RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS``
  (300) past ``rayJobInfo.endTime`` -> ``Complete``/``Failed`` (the same
  reason); the dashboard not answering for Ray's job status since
  ``jobStatusCheckFailureStartTime`` for ``RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS``
  (300) -> ``Failed`` (``JobStatusCheckTimeoutExceeded``, never retried, like
  ``DeadlineExceeded``);
- ``activeDeadlineSeconds`` past ``startTime`` before the end -> ``Failed``
  (``DeadlineExceeded``), the Ray job stopped;
- ``Complete``/``Failed`` with ``shutdownAfterJobFinishes``: the cluster and the
  submitter Job deleted ``ttlSecondsAfterFinished`` after ``endTime`` (a
  ``clusterSelector``'s cluster is never deleted);
- ``suspend`` while initializing or running -> ``Suspending`` (cluster and
  submitter deleted) -> ``Suspended``; resumed -> new again;
- ``Retrying``: the cluster and submitter deleted, then new again (a fresh
  cluster).

While initializing, waiting or running, ``status.rayClusterStatus`` mirrors the
RayCluster's status, written when a field KubeRay compares changes
(``InconsistentRayClusterStatus``: state, reason, the worker counts,
endpoints, head, conditions); it is reset with the cluster (suspend, retry).

:func:`decide` returns a :class:`Decision`: the status fields to write and the
actions to take; the controller (:mod:`rayscale.operator.rayjob_controller`)
observes and acts.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from pydantic import ValidationError

from rayscale.api.errors import messages
from rayscale.api.rayjob import TERMINAL_DEPLOYMENT_STATUSES, TERMINAL_JOB_STATUSES, RayJob
from rayscale.operator.rayjob_desired import CLUSTER_SELECTOR_KEY, SUBMITTER_CONTAINER

MAX_NAME_LENGTH = 47  # KubeRay's MaxRayJobNameLength
RUNNING_POLL_S = 2.0  # how often Ray's job status is read while the job runs
WAIT_POLL_S = 2.0  # initializing, suspending, retrying: check again after this
#: KubeRay's ``DefaultSubmitterFinishedTimeout``: how long after the submitter finished
#: Ray's job may take to reach a terminal status.
SUBMITTER_FINISHED_TIMEOUT_S = 30
#: KubeRay's env vars (read by the operator at each reconcile) and their defaults.
TRANSITION_GRACE_PERIOD_ENV = "RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS"
DEFAULT_TRANSITION_GRACE_PERIOD_S = 300
STATUS_CHECK_TIMEOUT_ENV = "RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS"
DEFAULT_STATUS_CHECK_TIMEOUT_S = 300
#: KubeRay's ``JobDeploymentStatusTransitionGracePeriodExceeded`` message.
GRACE_PERIOD_MESSAGE = ("JobDeploymentStatus does not transition to Complete or Failed within "
                        "the grace period after JobStatus reaches a terminal state.")


@dataclass(frozen=True)
class ClusterView:
    name: str
    state: str | None = None  # the RayCluster's status.state
    dashboard_url: str = ""  # KubeRay's <head svc>.<ns>.svc.cluster.local:<port>
    deleting: bool = False
    workers_suspended: bool = False  # every worker group has suspend: true
    status: dict[str, Any] = field(default_factory=dict)  # the RayCluster's status


@dataclass(frozen=True)
class SubmitterView:
    """The submitter: K8sJobMode's Job, or SidecarMode's ``ray-job-submitter`` container
    of the head pod."""

    failed: bool = False  # the Job's Failed condition; the container exited non-zero
    reason: str = ""  # the condition's reason; the container's terminated reason
    message: str = ""  # the condition's message
    exit_code: int | None = None  # SidecarMode: the container's exit code
    container: str = ""  # SidecarMode: the container's name
    #: when it finished: the Job's Complete/Failed condition's lastTransitionTime, the
    #: container's terminated finishedAt; None while it runs
    finished_at: datetime | None = None


@dataclass(frozen=True)
class RayJobView:
    """Ray's view of the job (the dashboard's job API)."""

    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str = ""
    start_time_ms: int | None = None
    end_time_ms: int | None = None


@dataclass(frozen=True)
class Observed:
    body: dict[str, Any]  # the RayJob as the API server has it
    job: RayJob | None  # None: invalid (see ``invalid``)
    invalid: str | None
    cluster: ClusterView | None
    submitter: SubmitterView | None
    submitter_exists: bool
    ray_job: RayJobView | None
    now: datetime
    new_suffix: str  # random, for names the decision may need (a cluster, a job id)
    #: the dashboard was asked for Ray's job status and answered "no such job" (404)
    ray_job_missing: bool = False
    #: the dashboard could not be asked, or failed to answer (why): a status check failure
    ray_job_error: str | None = None
    head_pod_missing: bool = False  # SidecarMode, Running: the cluster has no head pod
    transition_grace_period_s: int = DEFAULT_TRANSITION_GRACE_PERIOD_S
    status_check_timeout_s: int = DEFAULT_STATUS_CHECK_TIMEOUT_S


@dataclass
class Decision:
    status: dict[str, Any] = field(default_factory=dict)  # fields to set (None: remove)
    create_cluster: str | None = None  # its name
    create_submitter: bool = False
    submit_http: bool = False
    #: HTTPMode, Running, the dashboard has no such job: submit it again, then add
    #: ``after_resubmit[True]`` (it worked) or ``[False]`` (it failed) to ``status``
    resubmit_http: bool = False
    after_resubmit: dict[bool, dict[str, Any]] = field(default_factory=dict)
    stop_ray_job: bool = False
    delete_cluster: str | None = None
    delete_submitter: bool = False
    suspend_workers: bool = False  # DeleteWorkers: every worker group's suspend set
    delete_self: bool = False  # DeleteSelf: the RayJob itself
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        pass
    try:  # written by someone else: fractions of a second, an offset
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def go_datetime(when: datetime) -> str:
    """Go's ``time.DateTime`` layout (``2006-01-02 15:04:05``), as KubeRay's messages
    print times (UTC: the times come from the API server)."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


_GO_INT = re.compile(r"[+-]?[0-9]+")


def _atoi(text: str | None) -> int | None:
    """Go's ``strconv.Atoi``: an optional sign and decimal digits, nothing else."""
    return int(text) if text is not None and _GO_INT.fullmatch(text) else None


def transition_grace_period_s(environ: Mapping[str, str]) -> int:
    """KubeRay's ``RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS``: the
    default when unset or not an integer (any integer is taken, as KubeRay does)."""
    value = _atoi(environ.get(TRANSITION_GRACE_PERIOD_ENV))
    return DEFAULT_TRANSITION_GRACE_PERIOD_S if value is None else value


def status_check_timeout_s(environ: Mapping[str, str]) -> int:
    """KubeRay's ``getJobStatusCheckTimeoutSeconds``: ``RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS``,
    the default when unset, not an integer, or not positive."""
    value = _atoi(environ.get(STATUS_CHECK_TIMEOUT_ENV))
    return DEFAULT_STATUS_CHECK_TIMEOUT_S if value is None or value <= 0 else value


# ------------------------------------------------------------- observations


def job_submitter_view(job: Mapping[str, Any]) -> SubmitterView:
    """K8sJobMode's submitter Job (KubeRay's ``checkK8sJobStatus``,
    ``getJobFinishedCondition``): failed on its ``Failed`` condition; finished at the
    ``lastTransitionTime`` of its first ``Complete`` or ``Failed`` condition."""
    failed: Mapping[str, Any] | None = None
    finished_at: datetime | None = None
    finished_seen = False
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Failed" and failed is None:
            failed = cond
        if cond.get("type") in ("Complete", "Failed") and not finished_seen:
            finished_seen = True
            finished_at = parse_time(cond.get("lastTransitionTime"))
    if failed is None:
        return SubmitterView(finished_at=finished_at)
    return SubmitterView(failed=True, reason=str(failed.get("reason") or ""),
                         message=str(failed.get("message") or ""), finished_at=finished_at)


def sidecar_submitter_view(head_pod: Mapping[str, Any]) -> SubmitterView:
    """SidecarMode's ``ray-job-submitter`` container of the head pod (KubeRay's
    ``checkSidecarContainerStatus``, ``getSubmitterContainerFinishedTime``; the
    ``SidecarSubmitterRestart`` gate off, its default): failed when it terminated with a
    non-zero exit code; finished when it terminated."""
    for cs in (head_pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") != SUBMITTER_CONTAINER:
            continue
        ended = (cs.get("state") or {}).get("terminated")
        if not ended:
            return SubmitterView()
        code = int(ended.get("exitCode") or 0)
        return SubmitterView(failed=code != 0, reason=str(ended.get("reason") or ""),
                             message=str(ended.get("message") or ""), exit_code=code,
                             container=SUBMITTER_CONTAINER,
                             finished_at=parse_time(ended.get("finishedAt")))
    return SubmitterView()


# ------------------------------------------------------------------ validation


def validate(body: dict[str, Any]) -> tuple[RayJob | None, str | None]:
    """The typed RayJob, or KubeRay's reason for refusing it (naming the field)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if len(name) > MAX_NAME_LENGTH:
        return None, (f"metadata.name: RayJob name should be no more than {MAX_NAME_LENGTH} "
                      f"characters, got {len(name)}")
    try:
        job = RayJob.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as exc:
        return None, "; ".join(f"spec.{m}" if not m.startswith(("spec", "metadata")) else m
                               for m in messages(exc))
    problem = _spec_problem(job)
    return (None, problem) if problem else (job, None)


def _spec_problem(job: RayJob) -> str | None:
    spec = job.spec
    selector = bool(spec.cluster_selector)
    if not spec.shutdown_after_job_finishes and spec.ttl_seconds_after_finished > 0:
        return ("spec.ttlSecondsAfterFinished: a RayJob with shutdownAfterJobFinishes set to "
                "false cannot have ttlSecondsAfterFinished")
    problem = _deletion_problem(job)
    if problem:
        return problem
    if spec.suspend and not spec.shutdown_after_job_finishes:
        return ("spec.suspend: a RayJob with shutdownAfterJobFinishes set to false is not "
                "allowed to be suspended")
    if spec.suspend and selector:
        return "spec.suspend: the clusterSelector mode doesn't support the suspend operation"
    if spec.ray_cluster_spec is None and not selector:
        return "spec.rayClusterSpec: one of rayClusterSpec or clusterSelector must be set"
    if selector:
        if not spec.cluster_selector.get(CLUSTER_SELECTOR_KEY):
            return f"spec.clusterSelector: the cluster name ({CLUSTER_SELECTOR_KEY}) is empty"
        if spec.submission_mode == "SidecarMode":
            return "spec.clusterSelector: not supported in SidecarMode"
        if spec.backoff_limit > 0:
            return "spec.backoffLimit: incompatible with clusterSelector mode"
    if spec.submission_mode == "InteractiveMode" and spec.backoff_limit > 0:
        return "spec.backoffLimit: incompatible with InteractiveMode"
    if spec.submission_mode == "SidecarMode":
        if spec.submitter_pod_template is not None:
            return "spec.submitterPodTemplate: SidecarMode doesn't support it"
        if spec.submitter_config is not None:
            return "spec.submitterConfig: SidecarMode doesn't support it"
        head = (spec.ray_cluster_spec.head_group_spec.template.spec.restart_policy
                if spec.ray_cluster_spec is not None else None)
        if head not in (None, "", "Never"):
            return ("spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy: should be "
                    "Never or unset when using SidecarMode")
    if spec.submission_mode != "InteractiveMode" and not (spec.entrypoint or "").strip():
        return "spec.entrypoint: must be set"
    if spec.submission_mode == "K8sJobMode":
        try:
            shlex.split(spec.entrypoint or "")
        except ValueError as exc:
            return f"spec.entrypoint: cannot be split into words as a shell would: {exc}"
    if spec.runtime_env_yaml:
        try:
            loaded = yaml.safe_load(spec.runtime_env_yaml)
        except yaml.YAMLError as exc:
            return f"spec.runtimeEnvYAML: not valid YAML: {exc}"
        if loaded is not None and not isinstance(loaded, dict):
            return "spec.runtimeEnvYAML: must be a mapping"
    return None


def _deletion_problem(job: RayJob) -> str | None:
    """KubeRay's ``validateDeletionConfiguration`` (the feature gate is on by default)."""
    strategy = job.spec.deletion_strategy
    if strategy is None:
        return None
    legacy = strategy.on_success is not None or strategy.on_failure is not None
    rules = strategy.deletion_rules or []
    where = "spec.deletionStrategy"
    if rules and job.spec.shutdown_after_job_finishes:
        return (f"{where}.deletionRules: spec.shutdownAfterJobFinishes and "
                "deletionRules are mutually exclusive")
    if rules and legacy:
        return f"{where}: cannot use both onSuccess/onFailure and deletionRules"
    if legacy:
        if strategy.on_success is None or strategy.on_failure is None \
                or strategy.on_success.policy is None or strategy.on_failure.policy is None:
            return f"{where}: onSuccess and onFailure must both set a policy"
        return None
    if not rules:
        return f"{where}: requires either both onSuccess and onFailure, or deletionRules"
    seen: set[tuple[str, str]] = set()
    autoscaling = job.spec.ray_cluster_spec is not None \
        and bool(job.spec.ray_cluster_spec.enable_in_tree_autoscaling)
    for i, rule in enumerate(rules):
        cond = rule.condition
        at = f"{where}.deletionRules[{i}]"
        if (cond.job_status is None) == (cond.job_deployment_status is None):
            return f"{at}.condition: exactly one of jobStatus and jobDeploymentStatus"
        if job.spec.cluster_selector and rule.policy in ("DeleteCluster", "DeleteWorkers"):
            return f"{at}.policy: '{rule.policy}' not supported when clusterSelector is set"
        if autoscaling and rule.policy == "DeleteWorkers":
            return f"{at}.policy: 'DeleteWorkers' not supported with autoscaling enabled"
        when = cond.job_status or cond.job_deployment_status or ""
        if (rule.policy, when) in seen:
            return f"{at}: duplicate rule for '{rule.policy}' and '{when}'"
        seen.add((rule.policy, when))
    return None


# -------------------------------------------------------------------- decide


def decide(seen: Observed) -> Decision:
    out = _decide(seen)
    _mirror_cluster_status(seen, out)
    return out


def _decide(seen: Observed) -> Decision:
    status = dict(seen.body.get("status") or {})
    ds = status.get("jobDeploymentStatus") or ""
    out = Decision()
    if seen.job is None:
        message = f"The RayJob spec is invalid: {seen.invalid}"
        if ds != "ValidationFailed" or status.get("message") != message:
            out.status = {"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed",
                          "message": message}
            out.events.append(("Warning", "InvalidRayJobSpec", message))
        return out
    job = seen.job
    spec = job.spec
    if ds == "ValidationFailed":  # fixed since: start afresh
        ds = ""
        status = {}
        out.status = {"reason": None, "message": None}
    if ds == "":
        return _new(seen, out)
    if ds in ("Initializing", "Running", "Waiting"):
        if spec.suspend:
            out.status["jobDeploymentStatus"] = "Suspending"
            out.events.append(("Normal", "Suspending", "suspend: deleting the RayCluster"))
            out.requeue_after = 0.0
            return out
        if _deadline_passed(seen, status, spec.active_deadline_seconds):
            return _finish(seen, out, status, "Failed", "DeadlineExceeded",
                           f"The RayJob has passed the activeDeadlineSeconds "
                           f"({spec.active_deadline_seconds} s).", stop=True)
        if ds != "Running" and _deadline_passed(seen, status, spec.pre_running_deadline_seconds):
            return _finish(seen, out, status, "Failed", "PreRunningDeadlineExceeded",
                           f"The RayJob has passed the preRunningDeadlineSeconds "
                           f"({spec.pre_running_deadline_seconds} s) before running.",
                           stop=False)
    if ds == "Initializing":
        return _initializing(seen, out, status)
    if ds == "Waiting":  # InteractiveMode: the user submits, then names the job in spec.jobId
        if spec.job_id:
            out.status.update(jobId=spec.job_id, jobDeploymentStatus="Running")
            out.events.append(("Normal", "Running", f"following job {spec.job_id}"))
            out.requeue_after = 0.0
        else:
            out.requeue_after = WAIT_POLL_S
        return out
    if ds == "Running":
        return _running(seen, out, status)
    if ds in ("Complete", "Failed"):
        return _finished(seen, out, status)
    if ds in ("Suspending", "Retrying"):
        return _release(seen, out, ds)
    if ds == "Suspended":
        if not spec.suspend:
            out.status.update(jobDeploymentStatus="", reason=None, message=None)
            out.events.append(("Normal", "Resumed", "suspend is false: starting again"))
            out.requeue_after = 0.0
        return out
    return out


def _new(seen: Observed, out: Decision) -> Decision:
    assert seen.job is not None
    spec = seen.job.spec
    meta = seen.body["metadata"]
    if spec.suspend:
        out.status.update(jobDeploymentStatus="Suspended")
        return out
    if spec.cluster_selector:
        cluster = spec.cluster_selector[CLUSTER_SELECTOR_KEY]
    else:
        cluster = f"{meta['name']}-{seen.new_suffix}"
    job_id = spec.job_id or (seen.body.get("status") or {}).get("jobId") \
        or (None if spec.submission_mode == "InteractiveMode"
            else f"{meta['name']}-{seen.new_suffix}")
    out.status.update(
        jobDeploymentStatus="Initializing", jobId=job_id, rayClusterName=cluster,
        startTime=rfc3339(seen.now), endTime=None, jobStatus="", dashboardURL=None,
        observedGeneration=meta.get("generation"),
    )
    out.events.append(("Normal", "Initializing",
                       f"job {job_id or '(interactive)'} on RayCluster {cluster}"))
    out.requeue_after = 0.0
    return out


def _deadline_passed(seen: Observed, status: dict[str, Any], limit: int | None) -> bool:
    started = parse_time(status.get("startTime"))
    return limit is not None and started is not None \
        and (seen.now - started).total_seconds() >= limit


def _initializing(seen: Observed, out: Decision, status: dict[str, Any]) -> Decision:
    assert seen.job is not None
    spec = seen.job.spec
    name = status.get("rayClusterName") or ""
    cluster = seen.cluster
    if cluster is None:
        if spec.cluster_selector:
            out.requeue_after = WAIT_POLL_S  # the user's cluster does not exist (yet)
            return out
        out.create_cluster = name
        out.events.append(("Normal", "CreatedRayCluster", f"Created RayCluster {name}"))
        out.requeue_after = WAIT_POLL_S
        return out
    if cluster.state != "ready" or cluster.deleting:
        out.requeue_after = WAIT_POLL_S
        return out
    out.status["dashboardURL"] = cluster.dashboard_url
    if spec.submission_mode == "InteractiveMode":
        out.status["jobDeploymentStatus"] = "Waiting"
        out.events.append(("Normal", "Waiting",
                           "the RayCluster is ready: submit the job, then set spec.jobId"))
        out.requeue_after = 0.0
        return out
    if spec.submission_mode == "K8sJobMode":
        if not seen.submitter_exists:
            out.create_submitter = True
            out.events.append(("Normal", "CreatedRayJobSubmitter",
                               f"Created submitter Job {seen.body['metadata']['name']}"))
    elif spec.submission_mode == "SidecarMode":
        out.events.append(("Normal", "Running",
                           "the head pod's submitter container submits the job"))
    elif spec.submission_mode == "HTTPMode":
        out.submit_http = True
        out.events.append(("Normal", "SubmittedRayJob",
                           f"Submitted job {status.get('jobId')} to the dashboard"))
    out.status["jobDeploymentStatus"] = "Running"
    out.requeue_after = RUNNING_POLL_S
    return out


GRACE_PERIOD_REASON = "JobDeploymentStatusTransitionGracePeriodExceeded"
STATUS_CHECK_TIMEOUT_REASON = "JobStatusCheckTimeoutExceeded"
#: Failures never retried whatever ``backoffLimit`` says (KubeRay's
#: ``checkBackoffLimitAndUpdateStatusIfNeeded``).
NOT_RETRIED = frozenset({"DeadlineExceeded", STATUS_CHECK_TIMEOUT_REASON})
#: The modes whose submitter must finish too before the RayJob does (``utils.HasSubmitter``).
SUBMITTER_MODES = ("K8sJobMode", "SidecarMode")


def _running(seen: Observed, out: Decision, status: dict[str, Any]) -> Decision:
    """Running, in ``rayjob_controller.go``'s order: the transition grace period, the
    job status check timeout, the submitter (failed; finished too long ago), then Ray's
    job status (suspend and activeDeadlineSeconds come first, in :func:`_decide`)."""
    assert seen.job is not None
    spec = seen.job.spec
    job_status = status.get("jobStatus") or ""
    # checkTransitionGracePeriodAndUpdateStatusIfNeeded: Ray's job ended, the RayJob
    # did not follow (its submitter never finished)
    ray_ended = parse_time((status.get("rayJobInfo") or {}).get("endTime"))
    if job_status in TERMINAL_JOB_STATUSES and ray_ended is not None \
            and seen.now >= ray_ended + timedelta(seconds=seen.transition_grace_period_s):
        return _finish(seen, out, status, "Failed" if job_status == "FAILED" else "Complete",
                       GRACE_PERIOD_REASON, GRACE_PERIOD_MESSAGE, stop=False)
    # checkJobStatusCheckTimeoutAndUpdateStatusIfNeeded
    failing_since = parse_time(status.get("jobStatusCheckFailureStartTime"))
    if failing_since is not None \
            and seen.now >= failing_since + timedelta(seconds=seen.status_check_timeout_s):
        return _finish(seen, out, status, "Failed", STATUS_CHECK_TIMEOUT_REASON,
                       f"Job status checks have been failing since "
                       f"{go_datetime(failing_since)}; exceeded timeout of "
                       f"{seen.status_check_timeout_s}s", stop=False)
    out.requeue_after = RUNNING_POLL_S
    # checkSubmitterAndUpdateStatusIfNeeded
    sub = seen.submitter
    finished_at = sub.finished_at if sub is not None else None
    failure: str | None = None  # KubeRay's SubmissionFailed message
    if spec.submission_mode == "K8sJobMode":
        if not seen.submitter_exists and (seen.ray_job is None):
            out.create_submitter = True  # deleted meanwhile: create it again
        if sub is not None and sub.failed:
            failure = f"Job submission has failed. Reason: {sub.reason}. Message: {sub.message}"
    elif spec.submission_mode == "SidecarMode":
        if seen.head_pod_missing:
            return _finish(seen, out, status, "Failed", "AppFailed", "Ray head pod not found.",
                           stop=False)
        if sub is not None and sub.failed:
            failure = (f"Ray head pod container {sub.container} terminated with exit code "
                       f"{sub.exit_code}: {sub.reason}")
    # checkSubmitterFinishedTimeoutAndUpdateStatusIfNeeded (before a failed submitter's
    # own reason, as KubeRay orders them)
    if finished_at is not None \
            and seen.now >= finished_at + timedelta(seconds=SUBMITTER_FINISHED_TIMEOUT_S):
        out.status["jobStatus"] = "FAILED"
        return _finish(seen, out, status, "Failed", GRACE_PERIOD_REASON,
                       f"The RayJob submitter finished at {go_datetime(finished_at)} but the "
                       f"ray job did not reach terminal state within "
                       f"{SUBMITTER_FINISHED_TIMEOUT_S}s", stop=False)
    if failure is not None:
        # the submitter waits for the user's code: when Ray already said FAILED, that is why
        if job_status == "FAILED":
            return _finish(seen, out, status, "Failed", "AppFailed",
                           status.get("message") or "", stop=False)
        return _finish(seen, out, status, "Failed", "SubmissionFailed", failure, stop=False)
    if seen.ray_job_missing:  # the dashboard has no such job (yet)
        if spec.submission_mode == "HTTPMode":  # reconcileHTTPModeJobNotFound
            out.resubmit_http = True
            recorded = bool(status.get("jobStatusCheckFailureStartTime"))
            out.after_resubmit = {
                True: {"jobStatusCheckFailureStartTime": None} if recorded else {},
                False: {} if recorded else {"jobStatusCheckFailureStartTime": rfc3339(seen.now)},
            }
            return out
        if finished_at is not None:
            return _finish(seen, out, status, "Failed", "AppFailed",
                           "Submitter completed but Ray job not found in RayCluster.",
                           stop=False)
        return out
    if seen.ray_job_error is not None:  # recordJobStatusCheckFailure: the first one
        if not status.get("jobStatusCheckFailureStartTime"):
            out.status["jobStatusCheckFailureStartTime"] = rfc3339(seen.now)
        return out
    ray = seen.ray_job
    if ray is None:
        return out
    if status.get("jobStatusCheckFailureStartTime"):  # answered: the clock stops
        out.status["jobStatusCheckFailureStartTime"] = None
    if ray.status != status.get("jobStatus") or ray.message != (status.get("message") or ""):
        out.status["jobStatus"] = ray.status
        out.status["message"] = ray.message or None
        info: dict[str, Any] = {}
        if ray.start_time_ms:
            info["startTime"] = _ms(ray.start_time_ms)
        if ray.end_time_ms:
            info["endTime"] = _ms(ray.end_time_ms)
        out.status["rayJobInfo"] = info or None
    if spec.submission_mode in SUBMITTER_MODES and finished_at is None:
        return out  # the submitter still runs: the RayJob ends with it (KubeRay PR 1919)
    if ray.status == "SUCCEEDED":
        return _finish(seen, out, status, "Complete", None, ray.message, stop=False)
    if ray.status == "STOPPED":  # stopped by a user: ended, not failed (KubeRay's rule)
        return _finish(seen, out, status, "Complete", None, ray.message, stop=False)
    if ray.status == "FAILED":
        return _finish(seen, out, status, "Failed", "AppFailed", ray.message, stop=False)
    return out


def _ms(epoch_ms: int) -> str:
    return rfc3339(datetime.fromtimestamp(epoch_ms / 1000, UTC))


def _finish(seen: Observed, out: Decision, status: dict[str, Any], ds: str,
            reason: str | None, message: str, stop: bool) -> Decision:
    """The job ended: Complete, Failed, or Retrying while retries remain."""
    assert seen.job is not None
    spec = seen.job.spec
    out.stop_ray_job = stop
    failed = int(status.get("failed") or 0)
    succeeded = int(status.get("succeeded") or 0)
    if ds == "Failed":
        failed += 1
        out.status["failed"] = failed
    elif out.status.get("jobStatus", status.get("jobStatus")) == "SUCCEEDED":
        succeeded += 1  # not a Complete whose Ray job was STOPPED (the grace period)
        out.status["succeeded"] = succeeded
    if ds == "Failed" and failed <= spec.backoff_limit and reason not in NOT_RETRIED:
        out.status.update(jobDeploymentStatus="Retrying", reason=reason, message=message or None)
        out.events.append(("Warning", "Retrying",
                           f"attempt {failed} failed ({reason}); retrying on a fresh RayCluster"
                           f" ({failed}/{spec.backoff_limit} retries)"))
        out.requeue_after = 0.0
        return out
    out.status.update(jobDeploymentStatus=ds, reason=reason, message=message or None,
                      endTime=rfc3339(seen.now))
    kind = "Normal" if ds == "Complete" else "Warning"
    out.events.append((kind, ds if reason is None else reason,
                       f"RayJob {ds}" + (f": {message}" if message else "")))
    out.requeue_after = 0.0
    return out


#: KubeRay's ``selectMostImpactfulRule`` order.
_IMPACT = {"DeleteSelf": 4, "DeleteCluster": 3, "DeleteWorkers": 2, "DeleteNone": 1}


def _finished(seen: Observed, out: Decision, status: dict[str, Any]) -> Decision:
    """Complete or Failed: what is deleted, and when (deletionStrategy's rules, its
    onSuccess/onFailure, or shutdownAfterJobFinishes; KubeRay's precedence)."""
    assert seen.job is not None
    spec = seen.job.spec
    ended = parse_time(status.get("endTime")) or seen.now
    age = (seen.now - ended).total_seconds()
    strategy = spec.deletion_strategy
    if strategy is not None and strategy.deletion_rules:
        due: list[str] = []
        next_in: float | None = None
        for rule in strategy.deletion_rules:
            cond = rule.condition
            matched = (cond.job_status == status.get("jobStatus") if cond.job_status
                       else cond.job_deployment_status == status.get("jobDeploymentStatus"))
            if not matched:
                continue
            remaining = cond.ttl_seconds - age
            if remaining > 0:
                next_in = remaining if next_in is None else min(next_in, remaining)
            elif not _policy_done(seen, rule.policy):
                due.append(rule.policy)
        if due:
            _apply_policy(seen, out, max(due, key=lambda p: _IMPACT[p]), "deletionRules")
        out.requeue_after = next_in
        return out
    if strategy is not None and (strategy.on_success or strategy.on_failure):
        chosen = {"SUCCEEDED": strategy.on_success,
                  "FAILED": strategy.on_failure}.get(status.get("jobStatus") or "")
        if chosen is None or chosen.policy in (None, "DeleteNone"):
            return out
        remaining = spec.ttl_seconds_after_finished - age
        if remaining > 0:
            out.requeue_after = remaining
        elif not _policy_done(seen, chosen.policy):
            _apply_policy(seen, out, chosen.policy, "deletionStrategy")
        return out
    if not spec.shutdown_after_job_finishes or spec.cluster_selector:
        return out
    remaining = spec.ttl_seconds_after_finished - age
    if remaining > 0:
        out.requeue_after = remaining
        return out
    _apply_policy(seen, out, "DeleteCluster",
                  f"ttlSecondsAfterFinished: {spec.ttl_seconds_after_finished}")
    return out


def _policy_done(seen: Observed, policy: str) -> bool:
    cluster = seen.cluster
    if policy == "DeleteCluster":
        return cluster is None or cluster.deleting
    if policy == "DeleteWorkers":
        return cluster is None or cluster.deleting or cluster.workers_suspended
    return policy == "DeleteNone"


def _apply_policy(seen: Observed, out: Decision, policy: str, why: str) -> None:
    cluster = seen.cluster
    if policy == "DeleteSelf":
        out.delete_self = True
        out.events.append(("Normal", "DeletedRayJob", f"Deleting the RayJob ({why})"))
    elif policy == "DeleteCluster":
        if cluster is not None and not cluster.deleting:
            out.delete_cluster = cluster.name
            out.events.append(("Normal", "DeletedRayCluster",
                               f"Deleted RayCluster {cluster.name} ({why})"))
        if seen.submitter_exists:
            out.delete_submitter = True
    elif policy == "DeleteWorkers" and cluster is not None and not cluster.workers_suspended:
        out.suspend_workers = True
        out.events.append(("Normal", "DeletedWorkers",
                           f"Suspended the worker groups of RayCluster {cluster.name} ({why})"))


def _release(seen: Observed, out: Decision, ds: str) -> Decision:
    """Suspending or Retrying: delete the cluster and the submitter, then move on."""
    assert seen.job is not None
    if seen.cluster is not None and not seen.job.spec.cluster_selector:
        if not seen.cluster.deleting:
            out.delete_cluster = seen.cluster.name
        out.requeue_after = WAIT_POLL_S
    if seen.submitter_exists:
        out.delete_submitter = True
        out.requeue_after = WAIT_POLL_S
    if out.requeue_after is not None:
        return out
    reset: dict[str, Any] = {"rayClusterName": None, "dashboardURL": None, "jobStatus": "",
                             "rayJobInfo": None, "rayClusterStatus": None,
                             "jobStatusCheckFailureStartTime": None}
    if ds == "Suspending":
        out.status.update(reset, jobDeploymentStatus="Suspended", jobId=None, reason=None,
                          message=None, startTime=None, endTime=None)
        out.events.append(("Normal", "Suspended", "the RayCluster is deleted"))
    else:
        out.status.update(reset, jobDeploymentStatus="", jobId=None)
        out.requeue_after = 0.0
    return out


# ------------------------------------------------------- rayClusterStatus

#: The RayCluster status fields whose change is written (KubeRay's
#: ``InconsistentRayClusterStatus``; not lastUpdateTime or the desired resources).
CLUSTER_STATUS_COMPARED = (
    "state", "reason", "readyWorkerReplicas", "availableWorkerReplicas",
    "desiredWorkerReplicas", "minWorkerReplicas", "maxWorkerReplicas", "endpoints", "head",
    "conditions",
)
#: Where the RayJob's status follows its cluster's (KubeRay: Initializing, Running).
_MIRRORING = ("Initializing", "Waiting", "Running")


def _mirror_cluster_status(seen: Observed, out: Decision) -> None:
    """``status.rayClusterStatus``: the cluster's status when it changed (see the module)."""
    status = seen.body.get("status") or {}
    if seen.job is None or seen.cluster is None or seen.cluster.deleting \
            or "rayClusterStatus" in out.status \
            or status.get("jobDeploymentStatus") not in _MIRRORING:
        return
    old = status.get("rayClusterStatus") or {}
    new = seen.cluster.status
    if all(_blank(old.get(k)) == _blank(new.get(k)) for k in CLUSTER_STATUS_COMPARED):
        return
    out.status["rayClusterStatus"] = merge_patch(old, new)


def _blank(value: Any) -> Any:
    return None if value in ({}, [], "") else value


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7396) that turns ``old`` into ``new``: a key ``new``
    lacks is removed (None), a map is patched key by key, anything else replaced."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


# ---------------------------------------------------------------- metrics


def execution_ended(before: dict[str, Any], after: dict[str, Any],
                    now: datetime) -> tuple[str, int, float] | None:
    """KubeRay's ``emitRayJobExecutionDuration``: when a status write takes the job
    from a non-terminal deployment status to Complete, Failed or Retrying, that
    status, the retry count (``failed`` before the write) and the seconds since
    ``startTime``; else None."""
    was = before.get("jobDeploymentStatus") or ""
    now_ds = after.get("jobDeploymentStatus") or ""
    if was in TERMINAL_DEPLOYMENT_STATUSES \
            or now_ds not in (*TERMINAL_DEPLOYMENT_STATUSES, "Retrying"):
        return None
    started = parse_time(after.get("startTime"))
    if started is None:
        return None
    return now_ds, int(before.get("failed") or 0), max(0.0, (now - started).total_seconds())
