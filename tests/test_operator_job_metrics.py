"""The operator's RayJob metrics: series per RayJob, read back from the registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from lightkube import Client

from rayscale.operator.desired import PodSettings
from rayscale.operator.metrics import OperatorMetrics
from rayscale.operator.rayjob_controller import RayJobController, RayJobSettings
from rayscale.operator.rayjob_decide import execution_ended

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def sample(m: OperatorMetrics, metric: str, **labels: str) -> float | None:
    return cast("float | None", m.registry.get_sample_value(metric, labels))


def info(m: OperatorMetrics, ns: str, name: str) -> float | None:
    return sample(m, "rayscale_operator_job_info", name=name, namespace=ns)


def deployment(m: OperatorMetrics, ns: str, name: str, ds: str) -> float | None:
    return sample(m, "rayscale_operator_job_deployment_status", name=name, namespace=ns,
                  deployment_status=ds)


def duration(m: OperatorMetrics, ns: str, name: str, ds: str, retries: int) -> float | None:
    return sample(m, "rayscale_operator_job_execution_duration_seconds", name=name,
                  namespace=ns, job_deployment_status=ds, retry_count=str(retries))


def test_one_deployment_status_series_per_job() -> None:
    m = OperatorMetrics()
    m.set_job("ns", "a", "Initializing")
    m.set_job("ns", "b", "Running")
    assert info(m, "ns", "a") == 1 and info(m, "ns", "b") == 1
    assert deployment(m, "ns", "a", "Initializing") == 1
    m.set_job("ns", "a", "Running")
    m.set_job("ns", "a", "Running")
    assert deployment(m, "ns", "a", "Initializing") is None
    assert deployment(m, "ns", "a", "Running") == 1
    assert deployment(m, "ns", "b", "Running") == 1
    m.set_job("other", "a", "Complete")  # same name, another namespace: its own series
    assert deployment(m, "other", "a", "Complete") == 1
    assert deployment(m, "ns", "a", "Running") == 1


def test_forget_removes_every_series_of_that_job_only() -> None:
    m = OperatorMetrics()
    m.set_job("ns", "a", "Retrying")
    m.observe_job_execution("ns", "a", "Retrying", 0, 12.5)
    m.set_job("ns", "a", "Failed")
    m.observe_job_execution("ns", "a", "Failed", 1, 30.0)
    m.set_job("ns", "b", "Complete")
    m.observe_job_execution("ns", "b", "Complete", 0, 7.0)
    assert duration(m, "ns", "a", "Retrying", 0) == 12.5
    assert duration(m, "ns", "a", "Failed", 1) == 30.0
    m.forget_job("ns", "a")
    assert info(m, "ns", "a") is None
    assert deployment(m, "ns", "a", "Failed") is None
    assert duration(m, "ns", "a", "Retrying", 0) is None
    assert duration(m, "ns", "a", "Failed", 1) is None
    assert info(m, "ns", "b") == 1 and duration(m, "ns", "b", "Complete", 0) == 7.0
    m.forget_job("ns", "a")  # twice, or never seen: nothing to do
    m.forget_job("ns", "never")
    names = {s.name for fam in m.registry.collect() for s in fam.samples
             if s.labels.get("name") == "a"}
    assert names == set()


def test_execution_ends_at_terminal_or_retrying_like_kuberay() -> None:
    running = {"jobDeploymentStatus": "Running", "startTime": "2026-11-28T11:59:00Z"}
    assert execution_ended(running, {**running, "jobDeploymentStatus": "Complete"},
                           NOW) == ("Complete", 0, 60.0)
    assert execution_ended({**running, "failed": 1},
                           {**running, "jobDeploymentStatus": "Failed", "failed": 2},
                           NOW) == ("Failed", 1, 60.0)
    assert execution_ended(running, {**running, "jobDeploymentStatus": "Retrying"},
                           NOW) == ("Retrying", 0, 60.0)
    init = {**running, "jobDeploymentStatus": "Initializing"}  # preRunningDeadlineSeconds
    assert execution_ended(init, {**init, "jobDeploymentStatus": "Failed"}, NOW) is not None
    # no transition into an end: nothing observed
    assert execution_ended(running, running, NOW) is None
    done = {**running, "jobDeploymentStatus": "Complete"}
    assert execution_ended(done, done, NOW) is None
    assert execution_ended({**running, "jobDeploymentStatus": "Retrying"},
                           {"jobDeploymentStatus": ""}, NOW) is None
    assert execution_ended({"jobDeploymentStatus": "Running"},
                           {"jobDeploymentStatus": "Complete"}, NOW) is None  # no startTime


def _rayjob(name: str, rv: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "resourceVersion": rv, "deletionTimestamp": "2026-11-28T12:00:00Z"},
            "spec": {"entrypoint": "python x.py"}, "status": status}


def test_the_controller_keeps_and_removes_a_jobs_series() -> None:
    # a RayJob being deleted is only recorded (no API call); once the cache has lost it,
    # its series go
    m = OperatorMetrics()
    controller = RayJobController(cast(Client, None), RayJobSettings(pods=PodSettings()), m)
    body = _rayjob("a", "5", jobDeploymentStatus="Complete")
    controller.jobs.apply("ADDED", body)
    m.observe_job_execution("ns", "a", "Complete", 0, 3.0)
    controller.process("ns/a")
    assert info(m, "ns", "a") == 1 and deployment(m, "ns", "a", "Complete") == 1
    controller.jobs.apply("DELETED", body)
    controller.process("ns/a")
    assert info(m, "ns", "a") is None and deployment(m, "ns", "a", "Complete") is None
    assert duration(m, "ns", "a", "Complete", 0) is None
