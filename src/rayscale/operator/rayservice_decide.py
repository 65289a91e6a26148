"""The RayService state machine: what to do next, from what is observed (pure, no I/O).

KubeRay v1.7's ``rayservice_controller.go``, for the ``NewCluster`` and ``None``
upgrade strategies, one reconcile at a time:

1. Clusters of the RayService that are neither the active nor the pending one
   are deleted ``rayClusterDeletionDelaySeconds`` (default 60) after they were
   first seen so (the schedule lives in the operator's memory, as KubeRay's: a
   restarted operator starts the delay again).
2. An invalid RayService gets ``Ready=False`` (``ValidationFailed``) and a
   Warning Event naming the field; nothing else changes.
3. ``suspend``: ``Suspending`` (the statuses cleared), then every cluster and
   Service the RayService owns deleted, then ``Suspended``; resuming starts
   again from ``Initializing``.
4. The annotation ``ray.io/initializing-timeout``: a RayService that never had
   a serve endpoint within it fails for good (``InitializingTimeout``) and its
   clusters go.
5. Clusters: the pending cluster named in the status is created; a cluster
   whose spec differs from ``rayClusterConfig`` only by worker groups added at
   the end (or that another operator version made) is updated in place (worker
   replicas and ``workersToDelete`` stay the autoscaler's).
6. Each cluster's head pod is labelled ``ray.io/serve`` after its Serve proxy's
   health (``false`` with ``excludeHeadPodFromServeSvc``).
7. Serve: ``serveConfigV2`` is applied (PUT ``/api/serve/applications/``) to the
   pending cluster, or, without one, to the active cluster, when that cluster
   has not had this config from this operator or lists no application; a cluster
   is *ready* when it has applications and all are ``RUNNING``.
8. The head and serve Services point at the pending cluster once it is ready
   and has a pod the serve Service would select (rayscale's addition: a switch
   never leaves the Service without an endpoint), else at the active cluster
   when it is ready; a switch promotes the pending cluster to active.
9. A spec whose hash differs from the cluster's (KubeRay's muted fields aside)
   names a new pending cluster, unless the upgrade strategy is ``None`` (or,
   unset, ``ENABLE_ZERO_DOWNTIME=false``): then nothing but the Serve config
   changes. A spec changed back to the active cluster's while a pending one
   exists drops the pending one (rayscale's; KubeRay would start a third).
10. The status: both clusters' application and deployment statuses, their
    RayCluster statuses, ``numServeEndpoints`` (the pods the serve Service
    selects that are Ready: what its EndpointSlices list), ``Ready`` and
    ``UpgradeInProgress`` with KubeRay's reasons (the latter's message also
    says why a pending cluster does not take traffic yet); written when a field
    KubeRay compares changed.

``NewClusterWithIncrementalUpgrade`` (traffic moved in steps through Gateway API
weights) is refused as invalid: there is no Gateway implementation to drive.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from rayscale.api.errors import messages
from rayscale.api.raycluster import DNS1035_LABEL
from rayscale.api.rayservice import RayService
from rayscale.operator.rayjob_decide import merge_patch, parse_time, rfc3339
from rayscale.operator.rayservice_desired import (
    MAX_NAME_LENGTH,
    OPERATOR_VERSION,
    cluster_name,
    parse_serve_config,
    spec_hash,
    worker_group_count,
)
from rayscale.spec import SpecError
from rayscale.spec import parse_serve_config as serve_config

POLL_S = 2.0  # KubeRay's ServiceDefaultRequeueDuration: Serve's statuses read this often
BUSY_POLL_S = 1.0  # while initializing or upgrading
DEFAULT_DELETION_DELAY_S = 60  # KubeRay's RayClusterDeletionDelayDuration
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
ZERO_DOWNTIME_ENV = "ENABLE_ZERO_DOWNTIME"
RUNNING = "RUNNING"
FAILED_APP_STATUSES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})
DEFAULT_APP_NAME = "default"  # KubeRay's name for Serve's unnamed application
MAX_WHY = 300  # characters of a Serve message quoted in a condition
INCREMENTAL = "NewClusterWithIncrementalUpgrade"

Apps = dict[str, dict[str, Any]]  # name -> {status, message, serveDeploymentStatuses}


@dataclass(frozen=True)
class ClusterView:
    """One RayCluster of the RayService, as observed for this reconcile."""

    name: str
    deleting: bool = False
    hash: str | None = None  # its ray.io/hash-without-replicas-and-workers-to-delete
    worker_groups: str | None = None  # its ray.io/num-worker-groups
    version: str | None = None  # its ray.io/kuberay-version
    status: dict[str, Any] = field(default_factory=dict)  # the RayCluster's status
    head_pod: str | None = None  # the head pod's name (one not being deleted)
    head_ready: bool = False  # Running and Ready
    head_label: str | None = None  # its ray.io/serve label now
    proxy_healthy: bool | None = None  # the head's Serve proxy answered /-/healthz
    apps: Apps | None = None  # Serve's applications; None: not asked (head not ready)
    serve_error: str | None = None  # the dashboard was asked and did not answer
    applied_config: str | None = None  # the serveConfigV2 this operator gave it last
    ready_workers: int = 0  # worker pods labelled ray.io/serve=true, Ready, not deleting


@dataclass(frozen=True)
class Observed:
    body: dict[str, Any]  # the RayService as the API server has it
    service: RayService | None  # None: invalid
    invalid: str | None
    invalid_reason: str  # InvalidRayServiceSpec or InvalidRayServiceMetadata
    clusters: dict[str, ClusterView]  # the RayService's own, by name
    serving: str | None  # the cluster the serve Service selects now (None: no Service)
    services: tuple[str, ...]  # the names of the Services it owns that exist
    deletions: Mapping[str, datetime]  # clusters scheduled for deletion, and when
    now: datetime
    new_suffix: str
    zero_downtime_env: str | None = None  # $ENABLE_ZERO_DOWNTIME


@dataclass
class Decision:
    status: dict[str, Any] | None = None  # the status to write (None: unchanged)
    create_cluster: str | None = None  # the pending cluster to create
    update_clusters: list[str] = field(default_factory=list)  # to update in place
    delete_clusters: list[str] = field(default_factory=list)
    schedule: dict[str, datetime] = field(default_factory=dict)  # deletions to remember
    forget: list[str] = field(default_factory=list)  # schedules no longer needed
    labels: list[tuple[str, str]] = field(default_factory=list)  # (head pod, ray.io/serve)
    apply_config: list[str] = field(default_factory=list)  # clusters to give serveConfigV2
    services_to: str | None = None  # the cluster the head and serve Services must select
    delete_services: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, msg)
    requeue_after: float | None = None

    def soon(self, delay_s: float) -> None:
        delay_s = max(0.05, delay_s)
        self.requeue_after = delay_s if self.requeue_after is None \
            else min(self.requeue_after, delay_s)


# ------------------------------------------------------------------ validation

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def go_duration_s(text: str) -> float | None:
    """Go's ``time.ParseDuration`` (``1h30m``, ``300ms``, ``-5s``) in seconds; None if
    it is not one."""
    rest = text.strip()
    sign = 1.0
    if rest[:1] in "+-" and rest:
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        return None
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _GO_PART.match(rest, pos)
        if match is None:
            return None
        total += float(match[1]) * _GO_UNITS[match[2]]
        pos = match.end()
    return sign * total


def initializing_timeout_s(annotations: Mapping[str, str]) -> float | None:
    """KubeRay's ``getInitializingTimeout``: a Go duration or integer seconds."""
    text = annotations.get(INITIALIZING_TIMEOUT_ANNOTATION) or ""
    if not text:
        return None
    seconds = go_duration_s(text)
    if seconds is None and re.fullmatch(r"[+-]?\d+", text.strip()):
        seconds = float(int(text))
    return seconds


def _timeout_problem(annotations: Mapping[str, str]) -> str | None:
    text = annotations.get(INITIALIZING_TIMEOUT_ANNOTATION) or ""
    if not text:
        return None
    seconds = go_duration_s(text)
    if seconds is not None:
        return None if seconds > 0 else (
            f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive duration, "
            f"got: {text}")
    if re.fullmatch(r"[+-]?\d+", text.strip()):
        return None if int(text) > 0 else (
            f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive integer "
            f"(seconds), got: {text}")
    return (f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} has invalid format: {text}. "
            "Expected Go duration format (e.g., '5m', '1h') or positive integer seconds")


def validate(body: dict[str, Any]) -> tuple[RayService | None, str | None, str]:
    """The typed RayService, or why it is refused (each problem naming its field) and
    KubeRay's Event reason for it (``InvalidRayServiceMetadata``/``...Spec``)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if len(name) > MAX_NAME_LENGTH:
        return None, (f"metadata.name: RayService name should be no more than "
                      f"{MAX_NAME_LENGTH} characters, got {len(name)}"), \
            "InvalidRayServiceMetadata"
    if not DNS1035_LABEL.fullmatch(name):
        return None, (f"metadata.name: RayService name should be a valid DNS1035 label "
                      f"(lower-case letters, digits and '-', starting with a letter), "
                      f"got {name!r}"), "InvalidRayServiceMetadata"
    problem = _timeout_problem(meta.get("annotations") or {})
    if problem:
        return None, f"metadata.annotations: {problem}", "InvalidRayServiceMetadata"
    try:
        service = RayService.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as exc:
        return None, "; ".join(messages(exc, under_spec=False)), "InvalidRayServiceSpec"
    problem = _spec_problem(service, body)
    if problem:
        return None, problem, "InvalidRayServiceSpec"
    return service, None, ""


def _spec_problem(service: RayService, body: dict[str, Any]) -> str | None:
    spec = service.spec
    if spec.ray_cluster_config.auth_options is not None \
            and spec.ray_cluster_config.auth_options.k8s_token_auth:
        return ("spec.rayClusterConfig.authOptions: K8s token auth mode is currently not "
                "supported for RayService")
    head_svc = spec.ray_cluster_config.head_group_spec.head_service or {}
    if (head_svc.get("metadata") or {}).get("name"):
        return ("spec.rayClusterConfig.headGroupSpec.headService.metadata.name: should not "
                "be set")
    strategy = spec.upgrade_strategy
    if strategy is not None and strategy.type == INCREMENTAL:
        return (f"spec.upgradeStrategy.type: {INCREMENTAL} is not supported by rayscale "
                "(it moves traffic through Gateway API weights, and there is no Gateway "
                "implementation to drive); use NewCluster (a new cluster, then the serve "
                "Service switched to it once its applications are RUNNING) or None")
    if strategy is not None and strategy.cluster_upgrade_options is not None:
        return (f"spec.upgradeStrategy.clusterUpgradeOptions: only used by {INCREMENTAL}, "
                "which rayscale does not support")
    try:
        config = parse_serve_config((body.get("spec") or {}).get("serveConfigV2"))
    except ValueError as exc:
        return f"spec.serveConfigV2: {exc}"
    if config:  # Serve's rules, as local mode checks them (an empty config is allowed)
        try:
            serve_config(config, at="spec.serveConfigV2.")
        except SpecError as exc:
            return "; ".join(exc.errors)
    return None


# -------------------------------------------------------------------- conditions


def find_condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def set_condition(conditions: list[dict[str, Any]], kind: str, status: str, reason: str,
                  message: str, generation: Any, now: datetime) -> None:
    """``meta.SetStatusCondition``: the transition time moves only with the status."""
    new = {"type": kind, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": rfc3339(now)}
    if generation is not None:
        new["observedGeneration"] = generation
    for i, old in enumerate(conditions):
        if old.get("type") == kind:
            if old.get("status") == status and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            conditions[i] = new
            return
    conditions.append(new)


def _true(conditions: list[dict[str, Any]], kind: str) -> bool:
    cond = find_condition(conditions, kind)
    return cond is not None and cond.get("status") == "True"


# ---------------------------------------------------------------------- decide


def deletion_delay_s(body: dict[str, Any]) -> int:
    value = (body.get("spec") or {}).get("rayClusterDeletionDelaySeconds")
    return value if isinstance(value, int) and value >= 0 else DEFAULT_DELETION_DELAY_S


def decide(seen: Observed) -> Decision:
    out = Decision()
    body = seen.body
    meta = body["metadata"]
    old_status = copy.deepcopy(body.get("status") or {})
    st = copy.deepcopy(old_status)
    conds: list[dict[str, Any]] = st.setdefault("conditions", [])
    active_name = (st.get("activeServiceStatus") or {}).get("rayClusterName") or ""
    pending_name = (st.get("pendingServiceStatus") or {}).get("rayClusterName") or ""

    # never the cluster the serve Service selects, whatever the status says
    _clean_up(seen, out, {active_name, pending_name, seen.serving or ""} - {""})
    generation = st.get("observedGeneration")

    if seen.service is None:  # 2. invalid: the reason, nothing else changes
        set_condition(conds, "Ready", "False", "ValidationFailed", seen.invalid or "invalid",
                      generation, seen.now)
        out.events.append(("Warning", seen.invalid_reason,
                           f"{meta['namespace']}/{meta['name']}: {seen.invalid}"))
        _write_if_changed(out, old_status, st, seen.now, force=True)
        return out

    spec = seen.service.spec
    if _suspend(seen, out, st, conds):  # 3.
        _write_if_changed(out, old_status, st, seen.now, force=True)
        return out
    generation = st.get("observedGeneration")
    ready = find_condition(conds, "Ready")
    if ready is not None and ready.get("status") == "False" \
            and ready.get("reason") == "InitializingTimeout":  # 4. failed for good
        return out

    # 5. the clusters
    active = seen.clusters.get(active_name) if active_name else None
    pending = seen.clusters.get(pending_name) if pending_name else None
    config = body["spec"]["rayClusterConfig"]
    if pending_name and pending is None:
        out.create_cluster = pending_name
        out.soon(BUSY_POLL_S)
    upgrading = _true(conds, "UpgradeInProgress")
    updated: dict[str, ClusterView] = {}
    for view, is_active in ((active, True), (pending, False)):
        if view is not None and not view.deleting \
                and _should_update(config, view, is_active, upgrading):
            out.update_clusters.append(view.name)
            # what it is once updated (KubeRay goes on with the updated object)
            updated[view.name] = dataclasses.replace(
                view, hash=spec_hash(config), version=OPERATOR_VERSION,
                worker_groups=str(worker_group_count(config)))
    active = updated.get(active_name, active)
    pending = updated.get(pending_name, pending)

    # 6. head pods' ray.io/serve
    label_after: dict[str, str | None] = {}
    for view in (active, pending):
        if view is None:
            continue
        label_after[view.name] = view.head_label
        if view.head_pod is None:
            continue
        want = "false" if spec.exclude_head_pod_from_serve_svc or not view.proxy_healthy \
            else "true"
        label_after[view.name] = want
        if view.head_label != want:
            out.labels.append((view.head_pod, want))

    def endpoints(view: ClusterView | None) -> int:
        if view is None or view.deleting:
            return 0
        # the label as observed (and staying): a label this round is about to write may
        # not be in the Service's endpoints yet, and switching on it could leave none
        labelled = view.head_label == "true" and label_after.get(view.name) == "true"
        head = 1 if view.head_ready and labelled else 0
        return head + view.ready_workers

    # 7. Serve
    text = spec.serve_config_v2 or ""
    pending_ready = active_ready = False
    pending_apps = _serve(seen, out, pending, text, apply=True) if pending else None
    if pending is not None:
        pending_ready = _ready(pending_apps)
    active_apps: Apps | None = None
    if active is not None:
        apply = pending is None and not _should_prepare(seen, active, None, False)
        active_apps = _serve(seen, out, active, text, apply=apply)
        active_ready = apply and _ready(active_apps)

    # 8. the Services
    target: str | None = None
    if pending is not None and pending_ready and endpoints(pending) > 0:
        target = pending.name
    elif active is not None and active_ready:
        target = active.name
    out.services_to = target
    serving = target or seen.serving

    # 9./10. the status
    active_st = _service_status(st.get("activeServiceStatus"), active, active_apps)
    pending_st = _service_status(st.get("pendingServiceStatus"), pending, pending_apps)
    pending_serving = bool(pending_name) and serving == pending_name
    if pending_serving and pending_name != active_name:  # promoted: the switch happened
        active_st, pending_st = pending_st, {}
        active, pending = pending, None
    if pending_st.get("rayClusterName") and active is not None \
            and _hash_equal(config, active, partial=False):
        # the spec is the active cluster's again (an upgrade reverted): rayscale drops the
        # pending cluster (deleted after the delay) where KubeRay would start another one
        out.events.append(("Normal", "UpgradeCancelled",
                           f"rayClusterConfig matches the active RayCluster {active.name} "
                           f"again: the pending RayCluster {pending_st['rayClusterName']} "
                           "is not needed"))
        dropped = pending_st["rayClusterName"]
        out.apply_config = [n for n in out.apply_config if n != dropped]
        pending_st, pending = {}, None
        out.create_cluster = None
    # a pending cluster created now is made from the spec as it is: nothing new to prepare
    if out.create_cluster is None and _should_prepare(seen, active, pending, pending_serving):
        pending_st = {"rayClusterName": cluster_name(meta["name"], seen.new_suffix)}
        out.soon(0.1)
    st["activeServiceStatus"] = active_st
    st["pendingServiceStatus"] = pending_st
    st["observedGeneration"] = meta.get("generation")
    st["numServeEndpoints"] = endpoints(seen.clusters.get(serving or "")) \
        if serving and serving == active_st.get("rayClusterName") else 0
    _conditions(seen, out, st, conds, seen.clusters.get(pending_st.get("rayClusterName") or ""),
                pending_st)
    st["serviceStatus"] = "Running" if _true(conds, "Ready") else None
    _write_if_changed(out, old_status, st, seen.now)
    busy = bool(pending_st.get("rayClusterName")) or not _true(conds, "Ready")
    out.soon(BUSY_POLL_S if busy else POLL_S)
    return out


def _clean_up(seen: Observed, out: Decision, keep: set[str]) -> None:
    """1. Clusters neither active nor pending: deleted after the delay."""
    delay = timedelta(seconds=deletion_delay_s(seen.body))
    dangling = {name for name, view in seen.clusters.items()
                if name not in keep and not view.deleting}
    for name in sorted(dangling):
        when = seen.deletions.get(name)
        if when is None:
            out.schedule[name] = seen.now + delay
            out.soon(delay.total_seconds())
        elif seen.now >= when:
            out.delete_clusters.append(name)
        else:
            out.soon((when - seen.now).total_seconds())
    out.forget.extend(sorted(n for n in seen.deletions if n not in dangling))


def _suspend(seen: Observed, out: Decision, st: dict[str, Any],
             conds: list[dict[str, Any]]) -> bool:
    """3. KubeRay's ``handleSuspend``; True while suspend drives the reconcile."""
    assert seen.service is not None
    want = seen.service.spec.suspend
    now = seen.now
    generation = seen.body["metadata"].get("generation")
    if _true(conds, "Suspended"):
        if want:
            return True
        st["observedGeneration"] = generation
        set_condition(conds, "Suspended", "False", "RayServiceResumed",
                      "Spec.Suspend is false; RayService has resumed.", generation, now)
        for kind in ("Ready", "UpgradeInProgress"):  # a fresh transition time
            conds[:] = [c for c in conds if c.get("type") != kind]
            set_condition(conds, kind, "False", "Initializing",
                          "RayService is initializing after resuming from suspend.",
                          generation, now)
        return False
    if not _true(conds, "Suspending"):
        if not want:
            return False
        st["observedGeneration"] = generation
        set_condition(conds, "Suspending", "True", "SuspendRequested",
                      "Spec.Suspend is true; will delete all Kubernetes resources owned by "
                      "this RayService.", generation, now)
        set_condition(conds, "Ready", "False", "SuspendInProgress", "RayService is suspending.",
                      generation, now)
        set_condition(conds, "UpgradeInProgress", "False", "SuspendInProgress",
                      "No upgrade in progress.", generation, now)
        set_condition(conds, "RollbackInProgress", "False", "SuspendInProgress",
                      "No rollback in progress.", generation, now)
        st["activeServiceStatus"] = {}
        st["pendingServiceStatus"] = {}
        st["numServeEndpoints"] = None
        st["serviceStatus"] = None
        out.soon(POLL_S)
        return True
    # Suspending is committed: delete everything it owns, then Suspended
    left = [name for name, view in seen.clusters.items()]
    out.delete_clusters = [n for n, v in sorted(seen.clusters.items()) if not v.deleting]
    out.forget.extend(sorted(seen.deletions))
    out.schedule.clear()
    out.delete_services = list(seen.services)
    if left or seen.services:
        set_condition(conds, "Suspending", "True", "SuspendInProgress",
                      "Waiting for all Kubernetes resources owned by this RayService to be "
                      "deleted.", generation, now)
        out.soon(BUSY_POLL_S)
        return True
    done = "All owned resources have been deleted."
    set_condition(conds, "Suspending", "False", "SuspendComplete", done, generation, now)
    set_condition(conds, "Suspended", "True", "SuspendComplete", done, generation, now)
    set_condition(conds, "Ready", "False", "SuspendComplete", "RayService is suspended.",
                  generation, now)
    set_condition(conds, "UpgradeInProgress", "False", "SuspendComplete",
                  "No upgrade in progress.", generation, now)
    set_condition(conds, "RollbackInProgress", "False", "SuspendComplete",
                  "No rollback in progress.", generation, now)
    out.soon(POLL_S)
    return True


def _hash_equal(config: dict[str, Any], view: ClusterView, partial: bool) -> bool:
    """KubeRay's ``isClusterSpecHashEqual``; ``partial``: only the cluster's first worker
    groups compared (groups added at the end are an update in place)."""
    if not partial:
        return view.hash == spec_hash(config)
    try:
        groups = int(view.worker_groups or "")
    except ValueError:
        return True  # KubeRay's answer when the annotation is unreadable
    if worker_group_count(config) < groups:
        return False
    return view.hash == spec_hash(config, groups)


def _should_update(config: dict[str, Any], view: ClusterView, is_active: bool,
                   upgrading: bool) -> bool:
    """KubeRay's ``shouldUpdateCluster``."""
    if is_active:
        if upgrading:
            return False
        if view.version != OPERATOR_VERSION:
            return True
    if _hash_equal(config, view, partial=False):
        return False
    return _hash_equal(config, view, partial=True)


def zero_downtime(seen: Observed) -> bool:
    """KubeRay's ``isZeroDowntimeUpgradeEnabled``: ``upgradeStrategy.type`` first, else
    ``ENABLE_ZERO_DOWNTIME`` (only ``false`` turns it off)."""
    assert seen.service is not None
    strategy = seen.service.spec.upgrade_strategy
    if strategy is not None and strategy.type is not None:
        return strategy.type == "NewCluster"
    return (seen.zero_downtime_env or "").lower() != "false"


def _should_prepare(seen: Observed, active: ClusterView | None, pending: ClusterView | None,
                    pending_serving: bool) -> bool:
    """KubeRay's ``shouldPrepareNewCluster``: whether to name a new pending cluster."""
    if pending_serving:
        return False
    if active is None and pending is None:
        return True
    view = pending or active
    assert view is not None
    config = seen.body["spec"]["rayClusterConfig"]
    if _hash_equal(config, view, partial=False) or _hash_equal(config, view, partial=True):
        return False
    return zero_downtime(seen)


def _serve(seen: Observed, out: Decision, view: ClusterView, text: str,
           apply: bool) -> Apps | None:
    """7. Serve on one cluster: its applications (as observed), and whether to give it
    the config (KubeRay's ``checkIfNeedSubmitServeApplications``)."""
    if not view.head_ready or view.deleting:
        return None
    apps = view.apps
    if apps is None:
        return None
    if apply and text.strip() and (view.applied_config is None or not apps
                                   or view.applied_config != text):
        out.apply_config.append(view.name)
    meta = seen.body["metadata"]
    for name, app in sorted(apps.items()):
        if app.get("status") in FAILED_APP_STATUSES:
            out.events.append((
                "Warning", "ServeApplicationFailed",
                f"Serve application {name} on the RayCluster {meta['namespace']}/{view.name} "
                f"is {app['status']}: {_first_line(app.get('message'))}"))
    return apps


def _ready(apps: Apps | None) -> bool:
    return bool(apps) and all(a.get("status") == RUNNING for a in (apps or {}).values())


def _first_line(text: Any, limit: int = MAX_WHY) -> str:
    lines = [ln for ln in str(text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return "(no message)"
    # Serve's import errors end with the exception; the traceback before it is noise here
    line = lines[-1].strip() if len(lines) > 1 else lines[0].strip()
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _service_status(old: dict[str, Any] | None, view: ClusterView | None,
                    apps: Apps | None) -> dict[str, Any]:
    """``activeServiceStatus`` / ``pendingServiceStatus`` of one cluster. Applications
    not asked this time (head not ready, dashboard not answering) keep what was last
    seen while the cluster is the same."""
    old = dict(old or {})
    name = old.get("rayClusterName") or ""
    if not name:
        return {}
    out: dict[str, Any] = {"rayClusterName": name}
    if view is not None and view.status:
        out["rayClusterStatus"] = view.status
    if apps is not None:
        out["applicationStatuses"] = apps
    elif view is not None and old.get("applicationStatuses") and not view.deleting:
        out["applicationStatuses"] = old["applicationStatuses"]
    return out


def _why_not_serving(view: ClusterView | None, apps: Apps | None) -> str:
    """Why a pending cluster takes no traffic yet (the UpgradeInProgress message)."""
    if view is None:
        return "being created"
    if not view.head_ready:
        return "its head pod is not ready yet"
    if view.serve_error:
        return f"its dashboard did not answer: {_first_line(view.serve_error)}"
    if not apps:
        return "no Serve application yet"
    bad = [(n, a) for n, a in sorted(apps.items()) if a.get("status") != RUNNING]
    if bad:
        return "; ".join(f"application {n} is {a.get('status')}"
                         + (f": {_first_line(a.get('message'))}" if a.get("message") else "")
                         for n, a in bad)
    return "its Serve proxy is not healthy yet"


def _conditions(seen: Observed, out: Decision, st: dict[str, Any],
                conds: list[dict[str, Any]], pending: ClusterView | None,
                pending_st: dict[str, Any]) -> None:
    """KubeRay's ``calculateConditions`` (and ``markFailedOnInitializingTimeout``)."""
    generation = st.get("observedGeneration")
    now = seen.now
    if not conds:
        message = "RayService is initializing"
        set_condition(conds, "Ready", "False", "Initializing", message, generation, now)
        set_condition(conds, "UpgradeInProgress", "False", "Initializing", message,
                      generation, now)
    if (st.get("numServeEndpoints") or 0) > 0:
        set_condition(conds, "Ready", "True", "NonZeroServeEndpoints",
                      "Number of serve endpoints is greater than 0", generation, now)
    elif _true(conds, "Ready"):
        set_condition(conds, "Ready", "False", "ZeroServeEndpoints",
                      "Number of serve endpoints dropped to 0", generation, now)
    else:
        _initializing_timeout(seen, out, st, conds)
    active = (st.get("activeServiceStatus") or {}).get("rayClusterName")
    pending_name = (st.get("pendingServiceStatus") or {}).get("rayClusterName")
    if active and pending_name:
        why = _why_not_serving(pending, pending_st.get("applicationStatuses"))
        set_condition(conds, "UpgradeInProgress", "True", "BothActivePendingClustersExist",
                      f"Both active and pending Ray clusters exist; the pending RayCluster "
                      f"{pending_name} takes no traffic yet: {why}", generation, now)
    elif active:
        set_condition(conds, "UpgradeInProgress", "False", "NoPendingCluster",
                      "Active Ray cluster exists and no pending Ray cluster", generation, now)
    else:
        cond = find_condition(conds, "UpgradeInProgress")
        if cond is None or cond.get("reason") not in ("Initializing", "InitializingTimeout"):
            set_condition(conds, "UpgradeInProgress", "Unknown", "NoActiveCluster",
                          "No active Ray cluster exists, and the RayService is not "
                          "initializing.", generation, now)


def _initializing_timeout(seen: Observed, out: Decision, st: dict[str, Any],
                          conds: list[dict[str, Any]]) -> None:
    timeout = initializing_timeout_s(seen.body["metadata"].get("annotations") or {})
    ready = find_condition(conds, "Ready")
    if timeout is None or ready is None or ready.get("status") != "False" \
            or ready.get("reason") != "Initializing":
        return
    since = parse_time(ready.get("lastTransitionTime"))
    if since is None:
        return
    spent = (seen.now - since).total_seconds()
    if spent < timeout:
        out.soon(timeout - spent)
        return
    st["activeServiceStatus"] = {}
    st["pendingServiceStatus"] = {}
    message = (f"RayService failed to become ready within the configured timeout of "
               f"{timeout:g}s. Time spent initializing: {spent:.0f}s")
    set_condition(conds, "Ready", "False", "InitializingTimeout", message,
                  st.get("observedGeneration"), seen.now)
    out.events.append(("Warning", "RayServiceInitializingTimeout",
                       f"RayService initializing timeout exceeded after {spent:.0f}s "
                       f"(configured timeout: {timeout:g}s)"))


#: What KubeRay compares before writing a RayService's status
#: (``InconsistentRayServiceStatuses``): not the clusters' statuses, not the time.
def _compared(st: dict[str, Any]) -> Any:
    def service(part: Any) -> Any:
        part = part or {}
        apps = {n: (a.get("status"), a.get("message") or "",
                    {d: (s.get("status"), s.get("message") or "")
                     for d, s in (a.get("serveDeploymentStatuses") or {}).items()})
                for n, a in (part.get("applicationStatuses") or {}).items()}
        return part.get("rayClusterName") or "", apps

    return (st.get("serviceStatus") or "", st.get("numServeEndpoints") or 0,
            st.get("conditions") or [], service(st.get("activeServiceStatus")),
            service(st.get("pendingServiceStatus")))


def _write_if_changed(out: Decision, old: dict[str, Any], new: dict[str, Any], now: datetime,
                      force: bool = False) -> None:
    if _compared(old) == _compared(new) and not (force and _compared_all(old, new)):
        return
    new["lastUpdateTime"] = rfc3339(now)
    out.status = new


def _compared_all(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A change in anything but the time (a validation or suspend step)."""
    def strip(st: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in st.items() if k != "lastUpdateTime" and v not in (None, {}, [])}
    return strip(old) != strip(new)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that writes ``new`` over ``old`` (fields ``new`` drops removed)."""
    return merge_patch({k: v for k, v in old.items()},
                       {k: v for k, v in new.items() if v is not None})
