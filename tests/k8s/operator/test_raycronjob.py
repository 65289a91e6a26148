"""RayCronJobs on the dev cluster: RayJobs fired per slot, once, across operator restarts.

The operator runs here with ``--feature-gates RayCronJob=true`` (KubeRay's gate,
off by default) and ``--namespace`` of the test, so it is alone with the test's
objects even beside the session's operator. The RayJob and RayCronJob CRDs are
deploy/crds's, installed by the session's ``crd`` fixture. Nothing runs the
RayJobs (that is the RayJob controller's job, and the template says
``suspend: true`` so that none does): the tests look at the RayJob objects
made, and set a RayJob's status themselves where they need a finished one.

The schedules are real, no clock is faked. ``@every 4s`` (robfig/cron's
descriptor, which KubeRay accepts) fires within seconds, but KubeRay names a
slot's RayJob by its minute, so a schedule finer than a minute makes at most
one RayJob a minute. The test of successive RayJobs, restarts, history,
suspend and collection therefore runs ``* * * * *`` and takes about three
minutes of wall time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from rayscale import procs
from rayscale.devcluster import DevCluster
from tests.devtools import wait_for
from tests.k8s.operator.conftest import OperatorProcess, manifest

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
RayCronJob = create_namespaced_resource("ray.io", "v1", "RayCronJob", "raycronjobs")


class GatedOperator(OperatorProcess):
    """The operator with the RayCronJob gate on, watching one namespace."""

    def __init__(self, kubeconfig: Path, log: Path, namespace: str) -> None:
        super().__init__(kubeconfig, log)
        self.namespace = namespace

    def start(self) -> None:
        import os

        env = {**os.environ, procs.MARKER: "rayscale-test-operator"}
        self.proc = procs.spawn(
            [sys.executable, "-m", "rayscale.cli.main", "operator",
             "--kubeconfig", str(self.kubeconfig), "--shared-pod-network",
             "--namespace", self.namespace, "--feature-gates", "RayCronJob=true",
             "--metrics-port", str(self.metrics_port)],
            env, self.log,
        )


@pytest.fixture
def cron_operator(dev_cluster: DevCluster, crd: None, namespace: str,
                  tmp_path: Path) -> Iterator[GatedOperator]:
    handle = GatedOperator(dev_cluster.kubeconfig, tmp_path / "operator.log", namespace)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        print(handle.log.read_text()[-4000:])  # shown when the test fails


def job_template() -> dict[str, Any]:
    cluster = manifest("unused")["spec"]
    return {
        "entrypoint": "python -c 'print(42)'",
        # inert under any RayJob controller (KubeRay's, rayscale's): no cluster, no run
        "suspend": True,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 600,
        "rayClusterSpec": cluster,
        "metadata": {"team": "ml"},
    }


def cronjob(name: str, schedule: str = "* * * * *", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayCronJob",
            "metadata": {"name": name},
            "spec": {"schedule": schedule, "jobTemplate": job_template(), **spec}}


def rayjobs(kube: Client, ns: str, cron: str) -> list[dict[str, Any]]:
    return sorted((dict(j) for j in kube.list(RayJob, namespace=ns,
                                               labels={"ray.io/cronjob-name": cron})
                   if not j["metadata"].get("deletionTimestamp")),
                  key=lambda j: j["metadata"]["name"])


def events(kube: Client, ns: str, name: str, reason: str) -> list[Event]:
    return [e for e in kube.list(Event, namespace=ns)
            if e.involvedObject.name == name and e.reason == reason]


def seconds_into_minute() -> float:
    now = datetime.now(UTC)
    return now.second + now.microsecond / 1e6


def wait_until_second(second: float, latest: float) -> None:
    """Sleep until ``second`` into a minute, unless we are already in [second, latest]."""
    now = seconds_into_minute()
    if not second <= now <= latest:
        time.sleep((second - now) % 60)


def test_rayjobs_fire_once_per_slot_across_restarts_then_suspend_and_collection(
    kube: Client, namespace: str, cron_operator: GatedOperator
) -> None:
    ns, name = namespace, "nightly"
    wait_until_second(2, 40)  # room to restart the operator inside the first slot's minute
    created = kube.create(RayCronJob.from_dict(  # type: ignore[arg-type]
        cronjob(name, successfulJobsHistoryLimit=1, timeZone="Asia/Taipei")), namespace=ns)
    uid = created["metadata"]["uid"]

    # the first slot: the next whole minute, named by its Unix minute, spec = jobTemplate
    first = wait_for(lambda: rayjobs(kube, ns, name), 90, "the first slot's RayJob")
    assert len(first) == 1
    job = first[0]
    slot = job["metadata"]["annotations"]["ray.io/cronjob-scheduled-timestamp"]
    slot_time = datetime.fromisoformat(slot.replace("Z", "+00:00"))
    assert slot_time.second == 0
    assert job["metadata"]["name"] == f"{name}-{int(slot_time.timestamp()) // 60}"
    assert job["spec"] == kube.get(RayCronJob, name, namespace=ns)["spec"]["jobTemplate"]
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "RayCronJob", name, uid, True)
    wait_for(lambda: (kube.get(RayCronJob, name, namespace=ns).get("status") or {})
             .get("lastScheduleTime") == slot, 20, "lastScheduleTime = the first slot")
    assert wait_for(lambda: events(kube, ns, name, "CreatedRayJob"), 20, "a CreatedRayJob event")

    # a crash right after firing, then a restart within the same minute: no second RayJob
    cron_operator.kill()
    cron_operator.start()
    # the status write lost as well (a crash between create and status): the slot is due
    # again for the operator, whose create finds the name taken
    kube.patch(RayCronJob.Status, name, {"status": {"lastScheduleTime": None}}, namespace=ns,
               patch_type=PatchType.MERGE)
    wait_for(lambda: (kube.get(RayCronJob, name, namespace=ns).get("status") or {})
             .get("lastScheduleTime") == slot, 30, "lastScheduleTime written again")
    assert [j["metadata"]["name"] for j in rayjobs(kube, ns, name)] == [job["metadata"]["name"]]

    # the next slot fires, exactly once
    second = wait_for(lambda: (lambda js: js if len(js) >= 2 else None)(rayjobs(kube, ns, name)),
                      90, "the second slot's RayJob")
    assert len(second) == 2
    names = [j["metadata"]["name"] for j in second]
    assert int(names[1].rsplit("-", 1)[1]) == int(names[0].rsplit("-", 1)[1]) + 1

    # history: with successfulJobsHistoryLimit 1, of two Complete RayJobs the older goes
    for j in second:
        kube.patch(RayJob.Status, j["metadata"]["name"],
                   {"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}},
                   namespace=ns, patch_type=PatchType.MERGE)
    wait_for(lambda: [j["metadata"]["name"] for j in rayjobs(kube, ns, name)] == names[1:],
             30, "the older finished RayJob deleted")
    status = wait_for(lambda: (lambda s: s if [r["name"] for r in s.get("recentJobs") or []]
                               == names[1:] else None)(
        kube.get(RayCronJob, name, namespace=ns).get("status") or {}), 30, "recentJobs")
    assert status["recentJobs"][0]["jobDeploymentStatus"] == "Complete"
    assert status["recentJobs"][0]["jobStatus"] == "SUCCEEDED"

    # suspended: the next slots pass without a RayJob
    kube.patch(RayCronJob, name, {"spec": {"suspend": True}}, namespace=ns,
               patch_type=PatchType.MERGE)
    wait_for(lambda: events(kube, ns, name, "SuspendedRayCronJob"), 30, "SuspendedRayCronJob")
    time.sleep(60 - seconds_into_minute() + 8)  # past the next slot
    assert [j["metadata"]["name"] for j in rayjobs(kube, ns, name)] == names[1:]

    # deleting the RayCronJob deletes its RayJobs (the garbage collector, by owner reference)
    kube.delete(RayCronJob, name, namespace=ns)
    wait_for(lambda: not list(kube.list(RayJob, namespace=ns)), 90,
             "the RayJobs collected with their RayCronJob")


def test_a_bad_schedule_is_refused_naming_spec_schedule(
    kube: Client, namespace: str, cron_operator: GatedOperator
) -> None:
    ns, name = namespace, "broken"
    kube.create(RayCronJob.from_dict(cronjob(name, "invalid cron string")),  # type: ignore[arg-type]
                namespace=ns)
    warning = wait_for(lambda: events(kube, ns, name, "InvalidRayCronJobSpec"), 30,
                       "an InvalidRayCronJobSpec event")[0]
    assert warning.type == "Warning"
    assert warning.message is not None and warning.message.startswith("spec.schedule: ")
    assert "expected exactly 5 fields" in warning.message
    status = wait_for(lambda: kube.get(RayCronJob, name, namespace=ns).get("status"), 30,
                      "the status")
    assert status["reason"] == "InvalidRayCronJobSpec"
    assert status["message"].startswith("spec.schedule: ")

    # fixed (suspended, so that no slot fires): the reason goes
    kube.patch(RayCronJob, name, {"spec": {"schedule": "0 9 * * *", "suspend": True}},
               namespace=ns, patch_type=PatchType.MERGE)
    wait_for(lambda: not (kube.get(RayCronJob, name, namespace=ns).get("status") or {})
             .get("reason"), 30, "the reason cleared")
    assert rayjobs(kube, ns, name) == []


def test_after_an_outage_only_the_latest_missed_slot_fires(
    kube: Client, namespace: str, cron_operator: GatedOperator
) -> None:
    """Ten minutes without the operator, as the status tells it: one RayJob, for the
    latest slot (Kubernetes' CronJob rule; KubeRay v1.7 would make all ten)."""
    ns, name = namespace, "catchup"
    wait_until_second(3, 45)  # this minute's slot stays the latest while the test looks
    kube.create(RayCronJob.from_dict(cronjob(name)), namespace=ns)  # type: ignore[arg-type]
    latest = datetime.now(UTC).replace(second=0, microsecond=0)
    outage = latest - timedelta(minutes=10)
    kube.patch(RayCronJob.Status, name,
               {"status": {"lastScheduleTime": outage.strftime("%Y-%m-%dT%H:%M:%SZ")}},
               namespace=ns, patch_type=PatchType.MERGE)
    jobs = wait_for(lambda: rayjobs(kube, ns, name), 30, "the catch-up RayJob")
    assert [j["metadata"]["name"] for j in jobs] == [f"{name}-{int(latest.timestamp()) // 60}"]
    missed = wait_for(lambda: events(kube, ns, name, "MissedSchedules"), 20,
                      "a MissedSchedules event")[0]
    assert missed.message is not None and missed.message.startswith("9 earlier slot(s)")
    wait_for(lambda: (kube.get(RayCronJob, name, namespace=ns).get("status") or {})
             .get("lastScheduleTime") == latest.strftime("%Y-%m-%dT%H:%M:%SZ"), 20,
             "lastScheduleTime = the latest slot")
    time.sleep(3)
    assert len(rayjobs(kube, ns, name)) == 1


def test_every_seconds_fires_within_seconds_and_names_by_the_minute(
    kube: Client, namespace: str, cron_operator: GatedOperator
) -> None:
    """``@every 4s`` (robfig's descriptor, which KubeRay accepts): the first slot 4 s after
    creation; later slots of the same minute find KubeRay's per-minute name taken, so the
    slots advance and no second RayJob is made that minute."""
    ns, name = namespace, "often"
    wait_until_second(1, 20)  # several slots fit in this minute
    created = kube.create(RayCronJob.from_dict(  # type: ignore[arg-type]
        cronjob(name, "@every 4s")), namespace=ns)
    born = datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    (job,) = wait_for(lambda: rayjobs(kube, ns, name), 20, "the first slot's RayJob")
    slot = datetime.fromisoformat(
        job["metadata"]["annotations"]["ray.io/cronjob-scheduled-timestamp"].replace("Z",
                                                                                     "+00:00"))
    assert slot == born + timedelta(seconds=4)
    assert job["metadata"]["name"] == f"{name}-{int(slot.timestamp()) // 60}"
    later = (slot + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    wait_for(lambda: ((kube.get(RayCronJob, name, namespace=ns).get("status") or {})
                      .get("lastScheduleTime") or "") >= later, 20, "two more slots")
    assert [j["metadata"]["name"] for j in rayjobs(kube, ns, name)] == [job["metadata"]["name"]]
    kube.patch(RayCronJob, name, {"spec": {"suspend": True}}, namespace=ns,
               patch_type=PatchType.MERGE)
