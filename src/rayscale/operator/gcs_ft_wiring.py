"""GCS fault tolerance in the RayCluster controller: the I/O around the pure decisions.

Two things, each called once per reconcile by :class:`rayscale.operator.handlers.Controller`:

- :meth:`GcsFtWiring.deletion` carries out :func:`gcs_ft.deletion_step` (KubeRay
  v1.7's Redis cleanup): add the finalizer ``ray.io/gcs-ft-redis-cleanup-finalizer``
  (then the reconcile goes on with the patch's response; KubeRay requeues first); on
  deletion, delete the head and worker pods, wait for the head to be gone, create
  the cleanup Job ``<cluster>-redis-cleanup`` (owned by the RayCluster, listed by
  its labels as KubeRay does), poll it every 2 s, and remove the finalizer when it
  ends, or when ``ray.io/gcs-ft-deletion-timeout`` has passed. Finalizer updates
  are merge patches carrying the object's ``resourceVersion``: a concurrent change
  makes them fail (409) and the reconcile is retried on the newer object.
- :meth:`GcsFtWiring.redis_check` asks the cluster's Redis (:mod:`redis_probe`)
  while a head is to be created or is not ready (or ready, while the last look
  failed: a GCS without Redis runs until Ray gives up), at most once per backoff step
  (2 s doubling to 60 s while it fails; a success is trusted for 30 s). Redis
  refusing the password withholds the head pod (it could only crash and restart);
  an unreachable Redis is reported but does not hold the head back, since the
  pods' network may reach what the operator's cannot. :func:`redis_conditions`
  puts the verdict into KubeRay's conditions (see there).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from lightkube import ApiError, Client
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import PatchType

from rayscale.api import RayCluster
from rayscale.labels import (
    CLUSTER_LABEL,
    HEAD_GROUP,
    NODE_TYPE_HEAD,
    NODE_TYPE_LABEL,
    NODE_TYPE_WORKER,
)
from rayscale.operator import gcs_ft, redis_probe
from rayscale.operator.desired import PodSettings, head_pod
from rayscale.operator.reconcile import ObservedPod
from rayscale.operator.redis_probe import Verdict
from rayscale.providers.kuberay import RayClusterResource

log = logging.getLogger(__name__)

Obj = dict[str, Any]
#: (cluster body, event type, reason, message): post an Event about the RayCluster
Post = Callable[[Obj, str, str, str], None]

REQUEUE_S = 2.0  # KubeRay's DefaultRequeueDuration
HEAD_TERMINATING_REQUEUE_S = 10.0  # KubeRay's, while the head pod terminates
PROBE_FIRST_S = 2.0
PROBE_MAX_S = 60.0
PROBE_OK_S = 30.0


@dataclass
class _Probe:
    verdict: Verdict | None
    failures: int
    next_at: float  # monotonic: no new probe before
    posted: str | None = None  # the message of the Warning Event posted while it fails


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _node_type(pod: Obj) -> str | None:
    labels: Mapping[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(NODE_TYPE_LABEL)


class GcsFtWiring:
    """The finalizer, the cleanup Job and the Redis probe of one operator."""

    def __init__(self, client: Client, settings: PodSettings, pods: Callable[[str], list[Obj]],
                 upsert_cluster: Callable[[Obj], None], requeue: Callable[[str, float], None],
                 post: Post, env: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.settings = settings
        self.pods = pods
        self.upsert_cluster = upsert_cluster
        self.requeue = requeue
        self.post = post
        self.cleanup_on = gcs_ft.cleanup_enabled(os.environ if env is None else env)
        self.probes: dict[str, _Probe] = {}
        #: the verdict on a cluster's Redis (tests without a cluster replace it)
        self.verdict_of: Callable[[RayCluster], Verdict | None] = self._verdict_of

    def forget(self, key: str) -> None:
        self.probes.pop(key, None)

    # ------------------------------------------------------------ deletion

    def deletion(self, body: Obj, spec: RayCluster | None) -> bool:
        """Act on the finalizer; True when the reconcile stops here (deleting)."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        deleted = _parse_time(meta.get("deletionTimestamp"))
        if spec is None:  # an invalid spec: nothing to clean with; never keep it stuck
            if deleted is not None and gcs_ft.FINALIZER in finalizers:
                self._remove_finalizer(body, finalizers)
            return deleted is not None
        key = f"{spec.namespace}/{spec.name}"
        pods = self.pods(key)
        heads = [p for p in pods if _node_type(p) == NODE_TYPE_HEAD]
        job = None
        if deleted is not None and not heads and self.cleanup_on and gcs_ft.redis_backed(spec):
            job = self._cleanup_job(spec)
        step = gcs_ft.deletion_step(spec, finalizers, deleted, datetime.now(UTC), len(heads),
                                    job, self.cleanup_on)
        if step.action == "none":
            return False
        if step.action == "add-finalizer":
            log.info("%s: GCS fault tolerance with Redis: adding the finalizer %s", key,
                     gcs_ft.FINALIZER)
            self._patch_finalizers(body, [*finalizers, gcs_ft.FINALIZER])
            return False
        if step.action == "ignore":
            return True
        if step.action == "delete-pods":
            self._delete_pods(spec, pods)
            log.info("%s: waiting for the head pod to go before the Redis cleanup", key)
            self.requeue(key, HEAD_TERMINATING_REQUEUE_S)
        elif step.action == "create-job":
            self._create_job(body, spec, step)
        elif step.action == "wait-job":
            self.requeue(key, REQUEUE_S)
        else:  # remove-stale, remove-finalizer, force-remove
            # the patch carries the body's resourceVersion: of two reconciles of one
            # version only one removes the finalizer, and only that one posts the Event
            # (an Event about an object that is gone is still listed and described)
            self._remove_finalizer(body, finalizers)
            if step.event is not None:
                self.post(body, step.event[0], step.event[1], step.message)
            log.info("%s: removed the finalizer %s (%s) %s", key, gcs_ft.FINALIZER, step.action,
                     step.message)
        return True

    def _patch_finalizers(self, body: Obj, finalizers: list[str]) -> None:
        meta = body["metadata"]
        patch = {"metadata": {"finalizers": finalizers or None,
                              "resourceVersion": meta.get("resourceVersion")}}
        patched = self.client.patch(RayClusterResource, meta["name"], patch,
                                    namespace=meta["namespace"], patch_type=PatchType.MERGE)
        self.upsert_cluster(patched.to_dict())  # type: ignore[no-untyped-call]

    def _remove_finalizer(self, body: Obj, finalizers: list[str]) -> None:
        self._patch_finalizers(body, [f for f in finalizers if f != gcs_ft.FINALIZER])

    def _delete_pods(self, spec: RayCluster, pods: list[Obj]) -> None:
        """Head and worker pods (KubeRay's ``deleteAllPods``, each round); not the
        cleanup Job's pod, which carries the cluster's label too."""
        for pod in pods:
            meta = pod.get("metadata") or {}
            if _node_type(pod) not in (NODE_TYPE_HEAD, NODE_TYPE_WORKER) \
                    or meta.get("deletionTimestamp"):
                continue
            try:
                self.client.delete(Pod, meta["name"], namespace=spec.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise

    def _cleanup_job(self, spec: RayCluster) -> Obj | None:
        """KubeRay's ``RayClusterRedisCleanupJobAssociationOptions``: by labels."""
        labels: dict[str, Any] = {CLUSTER_LABEL: spec.name,
                                  NODE_TYPE_LABEL: gcs_ft.CLEANUP_NODE_TYPE}
        for job in self.client.list(Job, namespace=spec.namespace, labels=labels):
            return cast(Obj, job.to_dict())
        return None

    def _create_job(self, body: Obj, spec: RayCluster, step: gcs_ft.DeletionStep) -> None:
        meta = body["metadata"]
        key = f"{spec.namespace}/{spec.name}"
        manifest = gcs_ft.cleanup_job(head_pod(spec, self.settings), spec)
        manifest["metadata"]["namespace"] = spec.namespace
        manifest["metadata"]["ownerReferences"] = [{
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "name": spec.name,
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]
        try:
            self.client.create(cast(Job, Job.from_dict(manifest)), namespace=spec.namespace)
        except ApiError as exc:
            if exc.status.code == 409:  # already there (a cache behind): look again
                self.requeue(key, REQUEUE_S)
                return
            self.post(body, "Warning", "FailedToCreateRedisCleanupJob",
                      f"Failed to create Redis cleanup Job {spec.namespace}/"
                      f"{manifest['metadata']['name']}, {exc}")
            raise
        assert step.event is not None
        self.post(body, step.event[0], step.event[1], step.message)
        self.requeue(key, REQUEUE_S)

    # --------------------------------------------------------------- probe

    def redis_check(self, body: Obj, spec: RayCluster, observed: list[ObservedPod],
                    create: list[Obj]) -> tuple[Verdict | None, bool]:
        """(the verdict on the cluster's Redis, whether the head pod is withheld);
        ``create`` loses the head pod when it is. A Warning Event says each new
        verdict once while Redis fails; after a success the same failure is said again."""
        key = f"{spec.namespace}/{spec.name}"
        heads = [p for p in observed if _is_head(p) and not p.deleting and not p.finished]
        head_create = [m for m in create if _node_type(m) == NODE_TYPE_HEAD]
        state = self.probes.get(key)
        # a ready head is trusted, unless Redis failed the last look: a head whose GCS
        # cannot reach Redis runs until Ray gives up, then restarts
        trusted = any(h.ready for h in heads) and (state is None or state.verdict is None)
        if not gcs_ft.redis_backed(spec) or trusted or (not heads and not head_create):
            self.probes.pop(key, None)
            return None, False
        now = time.monotonic()
        if state is None or state.next_at <= now:
            verdict = self.verdict_of(spec)
            failures = 0 if verdict is None else (state.failures if state else 0) + 1
            delay = PROBE_OK_S if verdict is None else min(
                PROBE_MAX_S, PROBE_FIRST_S * 2 ** (failures - 1))
            posted = state.posted if state is not None and verdict is not None else None
            state = self.probes[key] = _Probe(verdict, failures, now + delay, posted)
            if verdict is not None:
                log.warning("%s: %s (%s; next look in %.0f s)", key, verdict.message,
                            verdict.reason, delay)
                if verdict.message != posted:
                    self.post(body, "Warning", verdict.reason, verdict.message)
                    state.posted = verdict.message
        verdict = state.verdict
        if verdict is None:
            return None, False
        self.requeue(key, max(0.0, state.next_at - now))
        withheld = verdict.reason == redis_probe.AUTH_FAILED and bool(head_create)
        if withheld:
            for manifest in head_create:
                create.remove(manifest)
        return verdict, withheld

    def _verdict_of(self, spec: RayCluster) -> Verdict | None:
        where = redis_probe.target(spec, self._secret_reader(spec.namespace))
        return redis_probe.probe(where) if where is not None else None

    def _secret_reader(self, namespace: str) -> redis_probe.SecretReader:
        def data(name: str) -> dict[str, str] | None:
            try:
                return self.client.get(Secret, name, namespace=namespace).data
            except ApiError as exc:
                if exc.status.code in (403, 404):
                    return None
                raise

        return redis_probe.secret_reader(data)


def _is_head(pod: ObservedPod) -> bool:
    return pod.group == HEAD_GROUP


def redis_conditions(conditions: list[Obj], verdict: Verdict | None, withheld: bool,
                     previous: list[Obj], now: str) -> list[Obj]:
    """KubeRay's conditions with the Redis verdict, no new field: ``HeadPodReady`` is
    False with the verdict's reason and message (a head whose GCS has no Redis serves
    no request, even while its pod runs); a withheld head is also KubeRay's
    ``ReplicaFailure`` (True: a pod the operator does not create), same reason."""
    if verdict is None:
        return conditions
    before = {c.get("type"): c for c in previous}

    def since(kind: str, status: str) -> str:
        old = before.get(kind)
        return str(old.get("lastTransitionTime") or now) if old and old.get("status") == status \
            else now

    out = []
    for condition in conditions:
        if condition.get("type") == "HeadPodReady":
            condition = {**condition, "status": "False", "reason": verdict.reason,
                         "message": verdict.message,
                         "lastTransitionTime": since("HeadPodReady", "False")}
        out.append(condition)
    if withheld:
        out.append({"type": "ReplicaFailure", "status": "True", "reason": verdict.reason,
                    "message": f"the head pod is not created: {verdict.message}",
                    "lastTransitionTime": since("ReplicaFailure", "True")})
    return out
