"""RayJobs on the real control plane with real Ray: KubeRay's samples and the lifecycle.

KubeRay's ``ray-job.sample.yaml`` and ``ray-job.shutdown.yaml`` are vendored
unchanged in ``kuberay/``. One thing in them cannot run here: their
``runtimeEnvYAML`` pip-installs ``requests==2.26.0`` and ``pendulum`` (this
machine has no network), and the sample code asserts that requests version.
:func:`kuberay_job` drops ``pip`` from the runtime env (``env_vars`` stay and
are checked by the sample's actor) and that one assert; nothing else changes.

Each test leaves nothing behind: the RayJobs are deleted, and their
RayClusters, submitter Jobs and pods must be gone (garbage collected).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Event, Pod

from tests.devtools import wait_for
from tests.k8s.operator.conftest import RayCluster, cluster_token, without_shutdown_drain

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
KUBERAY = Path(__file__).parent / "kuberay"
ORIGIN = {"ray.io/originated-from-crd": "RayJob"}


def kuberay_job(file: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A vendored sample's RayJob and ConfigMap, without the pip installs (see above)."""
    job, config_map = yaml.safe_load_all((KUBERAY / file).read_text())
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    env.pop("pip")
    job["spec"]["runtimeEnvYAML"] = yaml.safe_dump(env)
    code = config_map["data"]["sample_code.py"]
    pinned = 'assert requests.__version__ == "2.26.0"'
    assert pinned in code
    config_map["data"]["sample_code.py"] = code.replace(pinned, "")
    return job, config_map


def small_job(name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
    """The sample's RayJob with a head only (one Ray node per test)."""
    job, _ = kuberay_job("ray-job.sample.yaml")
    job["metadata"]["name"] = name
    job["spec"].pop("runtimeEnvYAML")
    job["spec"]["entrypoint"] = entrypoint
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    head.pop("volumes")
    head["containers"][0].pop("volumeMounts")
    head["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "2Gi"},
                                          "requests": {"cpu": "1", "memory": "1Gi"}}
    cluster["workerGroupSpecs"][0].update(replicas=0, minReplicas=0)
    without_shutdown_drain(cluster)
    job["spec"].update(spec)
    return dict(job)


@pytest.fixture
def jobs_ns(kube: Client, ns: str, operator: Any) -> Iterator[str]:
    """The test's namespace; afterwards its RayJobs are deleted and nothing may be left."""
    yield ns
    for obj in kube.list(RayJob, namespace=ns):
        kube.delete(RayJob, obj["metadata"]["name"], namespace=ns)

    def gone() -> bool:
        return not (list(kube.list(RayJob, namespace=ns))
                    or list(kube.list(RayCluster, namespace=ns, labels=ORIGIN))
                    or list(kube.list(Job, namespace=ns))
                    or [p for p in kube.list(Pod, namespace=ns)])

    wait_for(gone, 120, "RayJobs, their RayClusters, submitter Jobs and pods collected")


def status(kube: Client, ns: str, name: str) -> dict[str, Any]:
    return dict(kube.get(RayJob, name, namespace=ns).get("status") or {})


def wait_deployment(kube: Client, ns: str, name: str, wanted: str,
                    timeout_s: float = 300) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status(kube, ns, name)
        now = st.get("jobDeploymentStatus")
        assert now == wanted or now not in ("Complete", "Failed", "ValidationFailed"), st
        return st if now == wanted else None

    try:
        return wait_for(check, timeout_s, f"RayJob {name} {wanted}", interval_s=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status now {status(kube, ns, name)}") from None


def events(kube: Client, ns: str, name: str) -> list[Event]:
    return [e for e in kube.list(Event, namespace=ns)
            if e.involvedObject.kind == "RayJob" and e.involvedObject.name == name]


def exists(kube: Client, res: Any, ns: str, name: str) -> bool:
    try:
        obj = kube.get(res, name, namespace=ns)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()  # type: ignore
    return not meta.get("deletionTimestamp")


def create(kube: Client, ns: str, *docs: dict[str, Any]) -> None:
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            kube.create(ConfigMap.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
        else:
            kube.create(RayJob.from_dict(doc), namespace=ns)  # type: ignore[arg-type]


# ------------------------------------------------------------------- samples


def test_kuberay_sample_succeeds_in_k8s_job_mode(kube: Client, jobs_ns: str,
                                                operator: Any) -> None:
    job, config_map = kuberay_job("ray-job.sample.yaml")
    create(kube, jobs_ns, config_map, job)
    st = wait_deployment(kube, jobs_ns, "rayjob-sample", "Complete")
    assert st["jobStatus"] == "SUCCEEDED" and st["succeeded"] == 1
    assert st["rayClusterName"].startswith("rayjob-sample-")
    assert len(st["rayClusterName"]) == len("rayjob-sample-") + 5
    assert st["jobId"].startswith("rayjob-sample-")
    assert st["dashboardURL"] == (f"{st['rayClusterName']}-head-svc.{jobs_ns}"
                                  f".svc.cluster.local:8265")
    assert st["startTime"] and st["endTime"]
    # the submitter Job ran ray job submit and followed the logs to the end
    def submitter_done() -> bool:
        got = kube.get(Job, "rayjob-sample", namespace=jobs_ns).status
        return got is not None and got.succeeded == 1

    wait_for(submitter_done, 60, "the submitter Job succeeded")
    # no shutdownAfterJobFinishes: the cluster stays, owned by the RayJob
    cluster = kube.get(RayCluster, st["rayClusterName"], namespace=jobs_ns)
    assert cluster["metadata"]["ownerReferences"][0]["kind"] == "RayJob"
    reasons = [e.reason for e in events(kube, jobs_ns, "rayjob-sample")]
    for reason in ("Initializing", "CreatedRayCluster", "CreatedRayJobSubmitter", "Complete"):
        assert reason in reasons, reasons
    # status.rayClusterStatus: the cluster's status, as last written while the job ran
    assert st["rayClusterStatus"]["state"] == "ready", st.get("rayClusterStatus")
    assert st["rayClusterStatus"]["head"]["podIP"], st["rayClusterStatus"]
    # the operator's RayJob metrics: the job, its deployment status, how long it ran
    import urllib.request
    from datetime import UTC, datetime

    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """This RayJob's rayscale_operator_job* samples: (name, other labels) -> value."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        text = opener.open(operator.metrics_url, timeout=10).read().decode()
        return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k != "name")): s.value
                for family in text_string_to_metric_families(text) for s in family.samples
                if s.name.startswith("rayscale_operator_job")
                and s.labels.get("name") == "rayjob-sample"}

    def key(metric: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return metric, frozenset({"namespace": jobs_ns, **labels}.items())

    info = key("rayscale_operator_job_info")
    complete = key("rayscale_operator_job_deployment_status", deployment_status="Complete")

    def complete_series() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        got = scrape()
        return got if got.get(info) == 1 and got.get(complete) == 1 else None

    series = wait_for(complete_series, 30, "the RayJob's info and Complete series on /metrics")
    statuses = [k for k in series if k[0] == "rayscale_operator_job_deployment_status"]
    assert statuses == [complete], series  # one status series per job: the current one
    ran = series[key("rayscale_operator_job_execution_duration_seconds",
                     job_deployment_status="Complete", retry_count="0")]
    started = datetime.strptime(st["startTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    ended = datetime.strptime(st["endTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 0 < ran <= (ended - started).total_seconds() + 2, (ran, st)
    # the history (rayscale ui) keeps the job, on its cluster, with its driver's log
    from pathlib import Path

    from rayscale.history.store import HistoryStore

    store = HistoryStore(operator.history, readonly=True)
    try:
        (row,) = [c for c in store.clusters() if c.name == f"{jobs_ns}/{st['rayClusterName']}"]
        assert row.mode == "kubernetes"
        job_row = wait_for(lambda: next((j for j in store.jobs(row.id)
                                         if j.name == f"{jobs_ns}/rayjob-sample"
                                         and j.log_path and j.ended), None),
                           30, "the RayJob in the history with its log")
        assert job_row.status == "SUCCEEDED" and job_row.submission_id == st["jobId"]
        assert "got 5" in Path(job_row.log_path).read_text(), "the sample prints its counter"
    finally:
        store.close()
    # deleted: its series go
    kube.delete(RayJob, "rayjob-sample", namespace=jobs_ns)
    wait_for(lambda: not scrape(), 60, "the RayJob's series removed from /metrics")


def test_kuberay_shutdown_sample_removes_the_cluster_after_ttl(kube: Client,
                                                                jobs_ns: str) -> None:
    job, config_map = kuberay_job("ray-job.shutdown.yaml")
    create(kube, jobs_ns, config_map, job)
    st = wait_deployment(kube, jobs_ns, "rayjob-sample-shutdown", "Complete")
    assert st["jobStatus"] == "SUCCEEDED"
    cluster = st["rayClusterName"]
    assert exists(kube, RayCluster, jobs_ns, cluster)  # ttlSecondsAfterFinished: 10
    wait_for(lambda: not exists(kube, RayCluster, jobs_ns, cluster), 60,
             "the RayCluster deleted after the ttl")
    wait_for(lambda: not exists(kube, Job, jobs_ns, "rayjob-sample-shutdown"), 30,
             "the submitter Job deleted")
    wait_for(lambda: not list(kube.list(Pod, namespace=jobs_ns)), 90, "every pod gone")
    assert status(kube, jobs_ns, "rayjob-sample-shutdown")["jobDeploymentStatus"] == "Complete"


# ------------------------------------------------------------ HTTPMode, auth


def test_failing_entrypoint_http_mode_with_token_auth(kube: Client, jobs_ns: str,
                                                      operator: Any) -> None:
    job = small_job("fails", "python -c \"import sys; print('bye'); sys.exit(3)\"",
                    submissionMode="HTTPMode", shutdownAfterJobFinishes=True,
                    ttlSecondsAfterFinished=0, metadata={"team": "a"})
    job["spec"]["rayClusterSpec"]["authOptions"] = {"mode": "token"}
    create(kube, jobs_ns, job)
    st = wait_deployment(kube, jobs_ns, "fails", "Running")
    token = cluster_token(kube, jobs_ns, st["rayClusterName"])
    assert token
    st = wait_deployment(kube, jobs_ns, "fails", "Failed")
    assert st["jobStatus"] == "FAILED" and st["reason"] == "AppFailed", st
    assert "exit code 3" in st["message"] or "3" in st["message"], st["message"]
    assert st["failed"] == 1
    wait_for(lambda: not exists(kube, RayCluster, jobs_ns, st["rayClusterName"]), 60,
             "the cluster deleted (ttl 0)")
    # no submitter in HTTPMode; the token is nowhere but its Secret
    assert not list(kube.list(Job, namespace=jobs_ns))
    every = str(kube.get(RayJob, "fails", namespace=jobs_ns)) + str(
        [(e.reason, e.message) for e in events(kube, jobs_ns, "fails")])
    assert token not in every
    assert token not in operator.log.read_text(), "the token in the operator's log"
    assert "AppFailed" in [e.reason for e in events(kube, jobs_ns, "fails")]


def test_invalid_spec_is_validation_failed_with_a_warning(kube: Client, jobs_ns: str) -> None:
    job = small_job("bad", "python -c pass", suspend=True)  # suspend needs shutdown...
    create(kube, jobs_ns, job)
    st = wait_deployment(kube, jobs_ns, "bad", "ValidationFailed", 60)
    assert st["reason"] == "ValidationFailed" and "spec.suspend" in st["message"]
    warning = wait_for(lambda: [e for e in events(kube, jobs_ns, "bad")
                                if e.type == "Warning"], 30, "the warning")
    assert "spec.suspend" in (warning[0].message or "")
    assert not list(kube.list(RayCluster, namespace=jobs_ns))
    assert not list(kube.list(Job, namespace=jobs_ns))
    with contextlib.suppress(ApiError):
        pass


# ----------------------------------------------------------------- lifecycle

SLEEP = "python -c \"import time; time.sleep(600)\""


def patch_spec(kube: Client, ns: str, name: str, **spec: Any) -> None:
    from lightkube.types import PatchType

    kube.patch(RayJob, name, {"spec": spec}, namespace=ns, patch_type=PatchType.MERGE)


def test_suspend_before_start_then_resume_then_suspend_running(kube: Client,
                                                               jobs_ns: str) -> None:
    create(kube, jobs_ns, small_job("susp", SLEEP, submissionMode="HTTPMode", suspend=True,
                                    shutdownAfterJobFinishes=True))
    wait_deployment(kube, jobs_ns, "susp", "Suspended", 60)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: list(kube.list(RayCluster, namespace=jobs_ns)), 3, "no cluster")
    assert not list(kube.list(RayCluster, namespace=jobs_ns)), "a suspended job creates nothing"
    patch_spec(kube, jobs_ns, "susp", suspend=False)
    st = wait_deployment(kube, jobs_ns, "susp", "Running")
    cluster = st["rayClusterName"]
    wait_for(lambda: status(kube, jobs_ns, "susp").get("jobStatus") == "RUNNING", 120,
             "the Ray job running")
    patch_spec(kube, jobs_ns, "susp", suspend=True)
    st = wait_deployment(kube, jobs_ns, "susp", "Suspended", 120)
    assert not st.get("rayClusterName") and not st.get("jobId")
    assert not exists(kube, RayCluster, jobs_ns, cluster)
    reasons = [e.reason for e in events(kube, jobs_ns, "susp")]
    assert "Suspending" in reasons and "Suspended" in reasons and "Resumed" in reasons


def test_active_deadline_fails_the_job(kube: Client, jobs_ns: str) -> None:
    create(kube, jobs_ns, small_job("deadline", SLEEP, submissionMode="HTTPMode",
                                    activeDeadlineSeconds=30, shutdownAfterJobFinishes=True))
    st = wait_deployment(kube, jobs_ns, "deadline", "Failed", 180)
    assert st["reason"] == "DeadlineExceeded", st
    wait_for(lambda: not exists(kube, RayCluster, jobs_ns, st["rayClusterName"]), 60,
             "the cluster deleted (shutdownAfterJobFinishes, ttl 0)")


def test_backoff_limit_retries_on_a_fresh_cluster(kube: Client, jobs_ns: str) -> None:
    create(kube, jobs_ns, small_job("retry", "python -c \"import sys; sys.exit(1)\"",
                                    submissionMode="HTTPMode", backoffLimit=1,
                                    shutdownAfterJobFinishes=True))
    st = wait_deployment(kube, jobs_ns, "retry", "Failed", 400)
    assert st["failed"] == 2 and st["reason"] == "AppFailed", st
    created = [e.message for e in events(kube, jobs_ns, "retry")
               if e.reason == "CreatedRayCluster"]
    assert len(set(created)) == 2, created  # two clusters, one per attempt
    assert "Retrying" in [e.reason for e in events(kube, jobs_ns, "retry")]


def test_cluster_selector_uses_and_keeps_an_existing_cluster(kube: Client,
                                                             jobs_ns: str) -> None:
    spec = small_job("x", "x")["spec"]["rayClusterSpec"]
    kube.create(RayCluster.from_dict(  # type: ignore[arg-type]
        {"apiVersion": "ray.io/v1", "kind": "RayCluster",
         "metadata": {"name": "shared"}, "spec": spec}), namespace=jobs_ns)
    job = small_job("selected", "python -c \"print('hi')\"", submissionMode="HTTPMode",
                    shutdownAfterJobFinishes=True,
                    clusterSelector={"ray.io/cluster": "shared"})
    job["spec"].pop("rayClusterSpec")
    create(kube, jobs_ns, job)
    st = wait_deployment(kube, jobs_ns, "selected", "Complete", 300)
    assert st["rayClusterName"] == "shared" and st["jobStatus"] == "SUCCEEDED"
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not exists(kube, RayCluster, jobs_ns, "shared"), 5, "kept")
    assert exists(kube, RayCluster, jobs_ns, "shared"), "a selected cluster is never deleted"
    kube.delete(RayCluster, "shared", namespace=jobs_ns)


def test_pre_running_deadline_fails_a_job_that_does_not_start(kube: Client,
                                                               jobs_ns: str) -> None:
    job = small_job("late", SLEEP, preRunningDeadlineSeconds=10, shutdownAfterJobFinishes=True)
    # a worker no node can take: the cluster never becomes ready
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group.update(replicas=1, minReplicas=1)
    group["template"]["spec"]["nodeSelector"] = {"rayscale.io/nowhere": "true"}
    create(kube, jobs_ns, job)
    st = wait_deployment(kube, jobs_ns, "late", "Failed", 60)
    assert st["reason"] == "PreRunningDeadlineExceeded", st
    wait_for(lambda: not exists(kube, RayCluster, jobs_ns, st["rayClusterName"]), 60,
             "the cluster deleted")


def test_interactive_mode_follows_the_job_the_user_submits(kube: Client,
                                                           jobs_ns: str) -> None:
    from tests.k8s.operator.conftest import _job_client, dashboard_url

    create(kube, jobs_ns, small_job("inter", "unused", submissionMode="InteractiveMode",
                                    shutdownAfterJobFinishes=True))
    st = wait_deployment(kube, jobs_ns, "inter", "Waiting")
    assert not st.get("jobId")
    cluster = kube.get(RayCluster, st["rayClusterName"], namespace=jobs_ns)
    url = dashboard_url(kube, jobs_ns, st["rayClusterName"], cluster["status"]["head"]["podIP"])
    client: Any = wait_for(lambda: _job_client(url, {}), 60, "the job API")
    client.submit_job(entrypoint="python -c \"print('hello')\"", submission_id="by-hand-1")
    patch_spec(kube, jobs_ns, "inter", jobId="by-hand-1")
    st = wait_deployment(kube, jobs_ns, "inter", "Complete", 120)
    assert st["jobId"] == "by-hand-1" and st["jobStatus"] == "SUCCEEDED"


def test_deletion_rules_delete_workers_then_the_rayjob(kube: Client, jobs_ns: str) -> None:
    rules = [
        {"policy": "DeleteWorkers", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 0}},
        {"policy": "DeleteSelf", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 20}},
    ]
    # K8sJobMode with token auth: the submitter Job gets the token from the Secret
    job = small_job("rules", "python -c \"print('hi')\"",
                    deletionStrategy={"deletionRules": rules})
    job["spec"]["rayClusterSpec"]["authOptions"] = {"mode": "token"}
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group.update(replicas=1, minReplicas=1)
    create(kube, jobs_ns, job)
    st = wait_deployment(kube, jobs_ns, "rules", "Complete")
    assert st["jobStatus"] == "SUCCEEDED", st
    cluster = st["rayClusterName"]
    submitter = kube.get(Job, "rules", namespace=jobs_ns)
    assert submitter.spec is not None and submitter.spec.template.spec is not None
    env = {e.name: e for e in submitter.spec.template.spec.containers[0].env or []}
    token = env["RAY_AUTH_TOKEN"]
    assert token.value is None and token.valueFrom is not None, "the token by reference only"
    assert token.valueFrom.secretKeyRef is not None
    assert token.valueFrom.secretKeyRef.name == cluster

    def workers() -> list[Pod]:
        return [p for p in kube.list(Pod, namespace=jobs_ns,
                                     labels={"ray.io/cluster": cluster,
                                             "ray.io/node-type": "worker"})]

    def suspended() -> bool:
        groups = kube.get(RayCluster, cluster, namespace=jobs_ns)["spec"]["workerGroupSpecs"]
        return all(g.get("suspend") for g in groups)

    wait_for(suspended, 20, "the worker groups suspended (DeleteWorkers)")
    wait_for(lambda: not workers(), 35, "the worker pods deleted")
    assert exists(kube, RayCluster, jobs_ns, cluster), "DeleteWorkers keeps the head"
    wait_for(lambda: not exists(kube, RayJob, jobs_ns, "rules"), 60, "the RayJob deleted")
    wait_for(lambda: not exists(kube, RayCluster, jobs_ns, cluster), 60,
             "its cluster collected with it")


def test_sidecar_mode_submits_from_the_head_pod(kube: Client, jobs_ns: str) -> None:
    create(kube, jobs_ns, small_job("sidecar", "python -c \"print('from the head')\"",
                                    submissionMode="SidecarMode"))
    st = wait_deployment(kube, jobs_ns, "sidecar", "Complete")
    assert st["jobStatus"] == "SUCCEEDED"
    assert not list(kube.list(Job, namespace=jobs_ns)), "no submitter Job in SidecarMode"
    head = kube.list(Pod, namespace=jobs_ns, labels={"ray.io/cluster": st["rayClusterName"],
                                                    "ray.io/node-type": "head"})
    names = [c.name for p in head for c in (p.spec.containers if p.spec else [])]
    assert "ray-job-submitter" in names, names


# --------------------------------------------------------------- autoscaling

SPREAD = (  # two 1-CPU bundles on two different nodes: two workers, the head has no CPU
    "python -c \""
    "import ray; from ray.util.placement_group import placement_group; ray.init(); "
    "pg = placement_group([{'CPU': 1}] * 2, strategy='STRICT_SPREAD'); "
    "ray.get(pg.ready(), timeout=300); print('spread over two workers')\""
)


def test_an_autoscaling_rayjob_scales_its_workers_up_and_finishes(kube: Client,
                                                                  jobs_ns: str) -> None:
    """Two 1-CPU bundles spread over nodes, on a head with no CPUs: the sidecar adds
    two workers from zero, the job succeeds on them, and the cluster is removed after."""
    job = small_job("elastic", SPREAD, submissionMode="HTTPMode",
                    shutdownAfterJobFinishes=True, ttlSecondsAfterFinished=0)
    cluster = job["spec"]["rayClusterSpec"]
    cluster["enableInTreeAutoscaling"] = True
    cluster["autoscalerOptions"] = {"idleTimeoutSeconds": 60}
    cluster["headGroupSpec"]["rayStartParams"] = {"num-cpus": "0"}
    cluster["workerGroupSpecs"][0].update(replicas=0, minReplicas=0, maxReplicas=2)
    create(kube, jobs_ns, job)

    peak, stop = [0], threading.Event()

    def follow() -> None:
        while not stop.is_set():
            live = list(kube.list(Pod, namespace=jobs_ns,
                                  labels={"ray.io/node-type": "worker"}))
            peak[0] = max(peak[0], len(live))
            time.sleep(0.5)

    watcher = threading.Thread(target=follow)
    watcher.start()
    try:
        st = wait_deployment(kube, jobs_ns, "elastic", "Complete", 420)
    finally:
        stop.set()
        watcher.join()
    assert st["jobStatus"] == "SUCCEEDED", st  # its placement group needed both workers
    assert peak[0] == 2, f"the sidecar scaled the workers from 0 to 2 (peak {peak[0]})"
    wait_for(lambda: not exists(kube, RayCluster, jobs_ns, st["rayClusterName"]), 60,
             "the cluster deleted after the job (ttl 0)")
