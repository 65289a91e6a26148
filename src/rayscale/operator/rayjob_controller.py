"""The RayJob controller: watch RayJobs, their RayClusters and submitter Jobs; act.

Built like the RayCluster controller (:mod:`rayscale.operator.handlers`) from
:mod:`rayscale.operator.watch`: three informers (RayJobs; the RayClusters and
the batch/v1 Jobs labelled ``ray.io/originated-from-crd=RayJob``, indexed by
their RayJob) feed caches and queue the RayJob's key; workers reconcile one
key at a time. A reconcile observes (the caches; Ray's job status from the
dashboard's job API while the job runs: its answer, "no such job", or that it
could not be asked; in SidecarMode the head pod, read when needed), asks the
pure state machine
(:func:`rayscale.operator.rayjob_decide.decide`) what to do, and acts: create
or delete the RayCluster and the submitter Job, submit or stop the Ray job
(HTTPMode, deadlines), post Events, patch the status. A running job is polled
every :data:`~rayscale.operator.rayjob_decide.RUNNING_POLL_S` seconds (KubeRay
requeues too); a finished one costs nothing until its ttl.

With the status it writes, the controller keeps the operator's RayJob metrics
(:class:`rayscale.operator.metrics.OperatorMetrics`: info, deployment status,
execution duration) and removes a RayJob's series when it is gone.

The token of a cluster with ``authOptions.mode: token`` is read from its
Secret when the dashboard is called, used as a bearer header and dropped: it
is never cached, logged, or written into a status or an Event.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import httpx2 as httpx
from lightkube import ApiError, Client
from lightkube.config import client_adapter
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import PatchType

from rayscale.api import RayCluster
from rayscale.api.rayjob import TERMINAL_JOB_STATUSES, RayJob
from rayscale.labels import CLUSTER_LABEL, NODE_TYPE_LABEL, ORIGIN_CRD_LABEL, ORIGIN_NAME_LABEL
from rayscale.operator import dashboard
from rayscale.operator.desired import PodSettings
from rayscale.operator.events import event_manifest
from rayscale.operator.history import OperatorHistory
from rayscale.operator.managed import left_to_another
from rayscale.operator.metrics import OperatorMetrics
from rayscale.operator.rayjob_decide import (
    ClusterView,
    Decision,
    Observed,
    RayJobView,
    SubmitterView,
    decide,
    execution_ended,
    job_submitter_view,
    sidecar_submitter_view,
    status_check_timeout_s,
    transition_grace_period_s,
    validate,
)
from rayscale.operator.rayjob_desired import (
    RAYJOB_CRD,
    dashboard_url,
    random_suffix,
    ray_cluster,
    runtime_env,
    submitter_job,
)
from rayscale.operator.watch import (
    Informer,
    Obj,
    ObjectCache,
    Watched,
    WorkQueue,
    informers_for,
    origin_key,
    own_key,
    owned_by,
    serve_queue,
    start_workers,
    stop_workers,
)
from rayscale.spec import parse_cluster_spec

log = logging.getLogger(__name__)

RayJobResource = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
RayClusterResource = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
COMPONENT = "rayscale-operator"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
DASHBOARD_TIMEOUT_S = 10.0  # a job status query (KubeRay: 2 s direct, 10 s proxied)
MAX_KEPT_LOG_BYTES = 16 * 2**20  # a finished job's driver log kept in the history, at most


@dataclass(frozen=True)
class RayJobSettings:
    pods: PodSettings
    #: The submitter's Python (``python`` in the Ray image; on the dev cluster, whose
    #: pods are local processes, the operator's own).
    python: str = "python"
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    workers: int = 2
    server_timeout_s: int = 300



def job_key_of(obj: Obj) -> str | None:
    """The ``namespace/name`` of the RayJob a cluster or submitter Job comes from."""
    return origin_key(obj, RAYJOB_CRD, ORIGIN_NAME_LABEL, ORIGIN_CRD_LABEL)


class DashboardNotReady(Exception):
    """The head's job API does not answer yet (the cluster's state is ready as soon as
    the head pod runs): submit again shortly."""


class RayJobController:
    """Informers, caches, the work queue and the workers of RayJobs."""

    def __init__(self, client: Client, settings: RayJobSettings,
                 metrics: OperatorMetrics | None = None,
                 history: OperatorHistory | None = None) -> None:
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.history = history
        self.queue = WorkQueue()
        self.jobs = ObjectCache(index=own_key, on_change=self._job_changed)
        self.clusters = ObjectCache(index=job_key_of, on_change=self._changed)
        self.submitters = ObjectCache(index=job_key_of, on_change=self._changed)
        self.failures: dict[str, int] = {}
        self.said: dict[str, set[str]] = {}  # warnings posted, per RayJob
        self.informers: list[Informer] = []
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._http = client_adapter.Client(
            self.client.config, client_adapter.ConnectionParams(timeout=httpx.Timeout(10.0)))
        selector = f"{ORIGIN_CRD_LABEL}={RAYJOB_CRD}"
        kinds = [
            ("rayjobs", self.jobs, "apis/ray.io/v1", "rayjobs", None, "ray.io/v1", "RayJob"),
            ("rayjob-clusters", self.clusters, "apis/ray.io/v1", "rayclusters", selector,
             "ray.io/v1", "RayCluster"),
            ("rayjob-submitters", self.submitters, "apis/batch/v1", "jobs", selector,
             "batch/v1", "Job"),
        ]
        self.informers += informers_for((Watched(*k) for k in kinds), self._http,
                                        self.settings.namespaces,
                                        self.settings.server_timeout_s)
        self._workers = start_workers(self.informers, self._work, "rayjob",
                                      self.settings.workers)

    def stop(self) -> None:
        self._stopping.set()
        stop_workers(self.queue, self.informers, self._workers)

    def _job_changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        self._changed(key, old, new)  # queued first: the history never delays a reconcile
        if self.history is not None:
            self.history.job_changed(new)

    def _changed(self, key: str | None, old: Obj | None, new: Obj | None) -> None:
        if key is not None:
            self.queue.add(key)

    def _work(self) -> None:
        serve_queue(self.informers, self.queue, self._stopping, self.process)

    def process(self, key: str) -> None:
        ns, name = key.split("/", 1)
        body = self.jobs.get(ns, name)
        if body is None:
            self.failures.pop(key, None)
            self.said.pop(key, None)
            if self.metrics is not None:
                self.metrics.forget_job(ns, name)
            return
        try:
            self._reconcile(body)
            self.failures.pop(key, None)
        except Exception as exc:
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
            if isinstance(exc, DashboardNotReady):
                log.info("RayJob %s: %s (retry in %.1f s)", key, exc, delay)
            elif isinstance(exc, ApiError | httpx.HTTPError):
                log.warning("reconcile of RayJob %s failed (retry in %.1f s): %s", key, delay,
                            exc)
            else:
                log.exception("reconcile of RayJob %s failed (retry in %.1f s)", key, delay)
            self.queue.add_after(key, delay)

    # ------------------------------------------------------------- observe

    def _reconcile(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        key = f"{ns}/{name}"
        if meta.get("deletionTimestamp"):
            self._record(ns, name, body.get("status") or {})
            return  # the garbage collector removes what it owns
        if left_to_another(body, "RayJob", self.said):  # as KubeRay: MultiKueue's
            return
        job, invalid = validate(body)
        status = body.get("status") or {}
        cluster_obj = self._cluster(job, ns, status.get("rayClusterName"), uid)
        cluster = None
        if cluster_obj is not None:
            cluster = ClusterView(
                name=cluster_obj["metadata"]["name"],
                state=(cluster_obj.get("status") or {}).get("state"),
                dashboard_url=dashboard_url(cluster_obj),
                deleting=bool(cluster_obj["metadata"].get("deletionTimestamp")),
                workers_suspended=all(bool(g.get("suspend")) for g in
                                      cluster_obj["spec"].get("workerGroupSpecs") or []),
                status=dict(cluster_obj.get("status") or {}),
            )
        submitter_obj = self.submitters.get(ns, name)
        if not owned_by(submitter_obj, uid):
            submitter_obj = None
        submitter: SubmitterView | None = None
        if submitter_obj is not None:
            submitter = job_submitter_view(submitter_obj)
        ray_job: RayJobView | None = None
        missing, error, head_missing = False, None, False
        if job is not None and status.get("jobDeploymentStatus") == "Running":
            if job.spec.submission_mode == "SidecarMode" and cluster_obj is not None:
                head = self._head_pod(ns, cluster_obj["metadata"]["name"])
                head_missing = head is None
                submitter = sidecar_submitter_view(head) if head is not None else None
            if status.get("jobId"):  # KubeRay asks whatever the cluster's state
                if cluster_obj is None:
                    error = f"the RayCluster {status.get('rayClusterName')} does not exist"
                else:
                    ray_job, missing, error = self._ray_job(cluster_obj, str(status["jobId"]))
                    if ray_job is not None and ray_job.status in TERMINAL_JOB_STATUSES:
                        self._keep_logs(body, cluster_obj, str(status["jobId"]))
        seen = Observed(body=body, job=job, invalid=invalid, cluster=cluster,
                        submitter=submitter, submitter_exists=submitter_obj is not None,
                        ray_job=ray_job, now=datetime.now(UTC), new_suffix=random_suffix(),
                        ray_job_missing=missing, ray_job_error=error,
                        head_pod_missing=head_missing,
                        transition_grace_period_s=transition_grace_period_s(os.environ),
                        status_check_timeout_s=status_check_timeout_s(os.environ))
        decision = decide(seen)
        self._act(body, job, cluster_obj, decision, key)

    def _cluster(self, job: RayJob | None, ns: str, name: str | None, uid: str) -> Obj | None:
        if not name:
            return None
        if job is not None and job.spec.cluster_selector:
            # the user's cluster (not labelled ours): read when needed
            try:
                got = self.client.get(RayClusterResource, name, namespace=ns)
            except ApiError as exc:
                if exc.status.code == 404:
                    return None
                raise
            return cast(Obj, got.to_dict())  # type: ignore[no-untyped-call]
        found = self.clusters.get(ns, name)
        return found if owned_by(found, uid) else None

    def _address(self, cluster: Obj) -> str:
        return dashboard.address(cluster, self.settings.pods.shared_network)

    def _headers(self, cluster: Obj) -> dict[str, str]:
        return dashboard.auth_headers(self.client, cluster)

    def _dashboard(self, cluster: Obj) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self._address(cluster), headers=self._headers(cluster))

    def _ray_job(self, cluster: Obj, job_id: str) -> tuple[RayJobView | None, bool, str | None]:
        """Ray's view of the job; or that the dashboard has no such job (a 404, KubeRay's
        BadRequest); or why it could not be asked (a status check failure). KubeRay's
        ``GetJobInfo``: ``GET /api/jobs/<id>`` with a deadline (the Ray SDK's client has
        none: a dashboard that never answers would hold this worker, and its timeout
        never come)."""
        headers = self._headers(cluster)  # the Secret unreadable: the reconcile retries
        url = f"{self._address(cluster)}/api/jobs/{job_id}"
        try:
            got = httpx.get(url, headers=headers, timeout=DASHBOARD_TIMEOUT_S, trust_env=False)
            if got.status_code == 404:
                log.info("job %s: not on the dashboard (yet)", job_id)
                return None, True, None
            got.raise_for_status()
            info = got.json()
            if not isinstance(info, dict) or not info.get("status"):
                raise ValueError(f"not a job's details: {got.text[:200]}")
        except Exception as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            log.info("job %s: the dashboard did not answer (%s)", job_id, text)
            return None, False, text
        return RayJobView(status=str(info["status"]), message=str(info.get("message") or ""),
                          start_time_ms=info.get("start_time"),
                          end_time_ms=info.get("end_time")), False, None

    def _keep_logs(self, body: Obj, cluster: Obj, job_id: str) -> None:
        """A finished job's driver log into the history, before its cluster goes (once; a
        dashboard that does not answer leaves the job without one)."""
        if self.history is None or not self.history.wants_logs(str(body["metadata"]["uid"])):
            return
        url = f"{self._address(cluster)}/api/jobs/{job_id}/logs"
        try:
            with httpx.stream("GET", url, headers=self._headers(cluster),
                              timeout=DASHBOARD_TIMEOUT_S, trust_env=False) as got:
                got.raise_for_status()
                data = bytearray()
                for chunk in got.iter_bytes():
                    data += chunk
                    if len(data) > MAX_KEPT_LOG_BYTES:  # never a whole huge log in memory
                        break
            if len(data) > MAX_KEPT_LOG_BYTES:
                text = (f"(the driver's log is over {MAX_KEPT_LOG_BYTES} bytes: not kept; "
                        "`ray job logs` has it while the cluster lives)\n")
            else:
                text = str(json.loads(bytes(data)).get("logs") or "")
        except Exception as exc:  # the next reconcile tries again; the job goes on
            log.info("job %s: its logs could not be kept yet (%s)", job_id, type(exc).__name__)
            return
        self.history.save_job_logs(body, text)

    def _head_pod(self, ns: str, cluster: str) -> Obj | None:
        """The cluster's head pod, read now (KubeRay's ``GetRayClusterHeadPod``: none is
        None, more than one an error)."""
        pods = list(self.client.list(Pod, namespace=ns,
                                     labels={CLUSTER_LABEL: cluster, NODE_TYPE_LABEL: "head"}))
        if len(pods) > 1:
            raise RuntimeError(f"RayCluster {ns}/{cluster} has {len(pods)} head pods")
        return cast(Obj, pods[0].to_dict()) if pods else None

    # ----------------------------------------------------------------- act

    def _act(self, body: dict[str, Any], job: RayJob | None, cluster_obj: Obj | None,
             decision: Decision, key: str) -> None:
        meta = body["metadata"]
        ns = meta["namespace"]
        status = {**(body.get("status") or {}), **decision.status}
        if decision.create_cluster:
            manifest = ray_cluster(body, decision.create_cluster, job,
                                   str(status.get("jobId") or ""), self.settings.python,
                                   self.settings.pods.shared_network)
            try:
                created = self.client.create(
                    cast(Any, RayClusterResource).from_dict(manifest), namespace=ns)
                self.clusters.upsert(created.to_dict())
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
        if decision.create_submitter and job is not None and cluster_obj is not None:
            self._create_submitter(body, job, cluster_obj, str(status.get("jobId")),
                                   str(status.get("dashboardURL") or dashboard_url(cluster_obj)))
        if decision.submit_http and job is not None and cluster_obj is not None:
            self._submit_http(job, cluster_obj, str(status.get("jobId")))
        if decision.resubmit_http and job is not None and cluster_obj is not None:
            log.info("%s: job %s not on the dashboard: submitting it again", key,
                     status.get("jobId"))
            try:
                self._submit_http(job, cluster_obj, str(status.get("jobId")))
                submitted = True
            except Exception as exc:  # KubeRay: recordJobStatusCheckFailure
                log.info("%s: could not submit the Ray job again: %s", key,
                         str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                submitted = False
            decision.status.update(decision.after_resubmit.get(submitted, {}))
            status.update(decision.after_resubmit.get(submitted, {}))
        if decision.stop_ray_job and cluster_obj is not None and status.get("jobId"):
            try:
                self._dashboard(cluster_obj).stop_job(str(status["jobId"]))
            except Exception as exc:  # the cluster is going away anyway
                log.info("%s: could not stop the Ray job: %s", key, exc)
        if decision.delete_submitter:
            try:
                self.client.delete(Job, meta["name"], namespace=ns,
                                   cascade=_background())
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            self.submitters.mark_deleting(ns, meta["name"])
        if decision.delete_cluster:
            try:
                self.client.delete(RayClusterResource, decision.delete_cluster, namespace=ns)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            self.clusters.mark_deleting(ns, decision.delete_cluster)
        if decision.suspend_workers and cluster_obj is not None:
            groups = [{**g, "suspend": True}
                      for g in cluster_obj["spec"].get("workerGroupSpecs") or []]
            patched_cluster = self.client.patch(
                RayClusterResource, cluster_obj["metadata"]["name"],
                {"metadata": {"resourceVersion": cluster_obj["metadata"]["resourceVersion"]},
                 "spec": {"workerGroupSpecs": groups}},
                namespace=ns, patch_type=PatchType.MERGE)
            self.clusters.upsert(patched_cluster.to_dict())  # type: ignore[no-untyped-call]
        for kind, reason, message in decision.events:
            self._event(body, kind, reason, message)
        if decision.status:
            # on the version decided from: a status someone else wrote meanwhile (a
            # conflict) is read again, never overwritten
            patched = self.client.patch(RayJobResource.Status, meta["name"],
                                        {"metadata": {"resourceVersion":
                                                      meta.get("resourceVersion")},
                                         "status": decision.status}, namespace=ns,
                                        patch_type=PatchType.MERGE)
            written = patched.to_dict()  # type: ignore[no-untyped-call]
            self.jobs.upsert(written)
            if self.history is not None:  # the cache took it silently: no change event
                self.history.job_changed(written)
            ended = execution_ended(body.get("status") or {}, status, datetime.now(UTC))
            if ended is not None and self.metrics is not None:
                self.metrics.observe_job_execution(ns, meta["name"], *ended)
        self._record(ns, meta["name"], status)
        if decision.delete_self:
            try:
                self.client.delete(RayJobResource, meta["name"], namespace=ns)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            return
        if decision.requeue_after is not None:
            self.queue.add_after(key, max(decision.requeue_after, 0.05))

    def _record(self, ns: str, name: str, status: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.set_job(ns, name, str(status.get("jobDeploymentStatus") or ""))

    def _create_submitter(self, body: dict[str, Any], job: RayJob, cluster_obj: Obj,
                          job_id: str, url: str) -> None:
        cluster = _typed(cluster_obj)
        manifest = submitter_job(body, job, cluster, job_id, f"http://{url}",
                                 python=self.settings.python)
        try:
            created = self.client.create(cast(Job, Job.from_dict(manifest)),
                                         namespace=body["metadata"]["namespace"])
            self.submitters.upsert(created.to_dict())
        except ApiError as exc:
            if exc.status.code != 409:
                raise

    def _submit_http(self, job: RayJob, cluster_obj: Obj, job_id: str) -> None:
        try:
            client = self._dashboard(cluster_obj)
        except ConnectionError as exc:
            raise DashboardNotReady(f"the job API does not answer yet: {exc}") from None
        try:
            client.get_job_info(job_id)
            return  # submitted before (a retried reconcile)
        except Exception:  # not found: submit it
            pass
        spec = job.spec
        kwargs: dict[str, Any] = {}
        if spec.entrypoint_num_cpus:
            kwargs["entrypoint_num_cpus"] = spec.entrypoint_num_cpus
        if spec.entrypoint_num_gpus:
            kwargs["entrypoint_num_gpus"] = spec.entrypoint_num_gpus
        if spec.entrypoint_resources:
            kwargs["entrypoint_resources"] = json.loads(spec.entrypoint_resources)
        client.submit_job(entrypoint=(spec.entrypoint or "").strip(), submission_id=job_id,
                          runtime_env=runtime_env(job), metadata=dict(spec.metadata) or None,
                          **kwargs)

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if kind == "Warning":  # the same warning once (a bad spec is seen at every event)
            seen = self.said.setdefault(key, set())
            if message in seen:
                return
            seen.add(message)
        log.info("RayJob %s: %s %s: %s", key, kind, reason, message)
        event = event_manifest(body, "RayJob", kind, reason, message, COMPONENT)
        try:
            self.client.create(cast(Event, Event.from_dict(event)), namespace=meta["namespace"])
        except (ApiError, httpx.HTTPError) as exc:
            log.warning("could not post event %s on RayJob %s: %s", reason, key, exc)


def _typed(cluster_obj: Obj) -> RayCluster:
    return parse_cluster_spec({k: v for k, v in cluster_obj.items() if k != "status"})


def _background() -> Any:
    from lightkube.types import CascadeType

    return CascadeType.BACKGROUND
