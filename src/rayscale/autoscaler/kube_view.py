"""`rayscale status NAME -n NS`: a RayCluster's status document, as local mode shows it.

Built from what the API server holds, so it works from anywhere ``kubectl``
does: the RayCluster (its spec and KubeRay's status fields), its pods, and
the sidecar's last status document (autoscaler/kube_status.py) for the
autoscaler's view (nodes as it sees them, resource usage, demand, the plan,
recent events). The keys are those of local mode's document, so one renderer
serves both; ``kubernetes`` adds KubeRay's own status fields.

``state`` is ``running`` only when Ray answers: the head pod is Ready (its
readiness probe asks the raylet and the GCS) and, for an autoscaling cluster,
the sidecar runs and its report is fresh. Otherwise ``degraded``, ``down``
(no head pod running) or ``suspended``, with the reasons in ``problems``.
Without a running head the sidecar's report describes the past: it moves
under ``last_known``.
"""

from __future__ import annotations

import time
from typing import Any

from rayscale.autoscaler.kube_status import HEARTBEAT_S

Obj = dict[str, Any]
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: the sidecar writes at least every HEARTBEAT_S; a report three times older is stale
STALE_AFTER_S = 3 * HEARTBEAT_S
LAST_KNOWN_KEYS = ("groups", "nodes", "usage", "demand", "plan")
KUBERAY_STATUS_KEYS = ("state", "reason", "readyWorkerReplicas", "availableWorkerReplicas",
                       "desiredWorkerReplicas", "minWorkerReplicas", "maxWorkerReplicas",
                       "desiredCPU", "desiredMemory", "desiredGPU", "lastUpdateTime")
SIDECAR = "autoscaler"


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_state(pod: Obj) -> str | None:
    """pending, running or terminating; None for a pod that has ended."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "terminating"
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Running":
        return "running"
    if phase in (None, "Pending"):
        return "pending"
    return None


def _container_running(pod: Obj, name: str) -> bool:
    return any(c.get("name") == name and "running" in (c.get("state") or {})
               for c in (pod.get("status") or {}).get("containerStatuses") or [])


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def pod_groups(cluster: Obj, pods: list[Obj]) -> tuple[dict[str, Obj], list[Obj]]:
    """Groups and nodes from the pods, for a cluster with no sidecar report."""
    groups: dict[str, Obj] = {}
    for g in (cluster.get("spec") or {}).get("workerGroupSpecs") or []:
        groups[g["groupName"]] = {"running": 0, "pending": 0, "terminating": 0, "idle": 0,
                                  "min": g.get("minReplicas", 0),
                                  "max": g.get("maxReplicas", 2**31 - 1),
                                  "launchable": True}
    nodes = []
    for pod in pods:
        labels = _labels(pod)
        if labels.get("ray.io/node-type") != "worker":
            continue
        state = pod_state(pod)
        group = labels.get("ray.io/group", "?")
        if state is None:
            continue
        if group in groups:
            groups[group][state] += 1
        nodes.append({"id": pod["metadata"]["name"], "group": group, "status": state,
                      "ip": (pod.get("status") or {}).get("podIP")})
    return groups, nodes


def kube_status(cluster: Obj, pods: list[Obj], report: Obj | None,
                now: float | None = None) -> Obj:
    """The status document of one RayCluster (see the module's docstring)."""
    now = time.time() if now is None else now
    meta = cluster["metadata"]
    spec = cluster.get("spec") or {}
    kuberay = {k: v for k, v in (cluster.get("status") or {}).items()
               if k in KUBERAY_STATUS_KEYS}
    conditions = {c.get("type"): c.get("status")
                  for c in (cluster.get("status") or {}).get("conditions") or []}
    endpoints = (cluster.get("status") or {}).get("endpoints") or {}
    heads = [p for p in pods if _labels(p).get("ray.io/node-type") == "head"
             and pod_state(p) is not None]
    head = next((p for p in heads if pod_state(p) == "running"), heads[0] if heads else None)
    head_ip = ((head or {}).get("status") or {}).get("podIP")
    head_running = head is not None and pod_state(head) == "running"
    ready = head is not None and head_running and _pod_ready(head)
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    sidecar = head is not None and _container_running(head, SIDECAR)
    age = now - float(report["updated_at"]) if report and report.get("updated_at") else None

    problems: list[str] = []
    suspended = bool(spec.get("suspend"))
    queue = (meta.get("labels") or {}).get(QUEUE_LABEL)
    if suspended and queue:
        problems.append(f"the RayCluster is suspended: it waits in Kueue's queue {queue} "
                        "(`rayscale queue` says why)")
    elif suspended:
        problems.append("the RayCluster is suspended")
    elif head is None:
        problems.append("there is no head pod")
    elif not head_running:
        problems.append(f"the head pod {head['metadata']['name']} is not running "
                        f"({(head.get('status') or {}).get('phase')})")
    elif not ready:
        problems.append(f"the head pod {head['metadata']['name']} is not Ready (Ray does "
                        "not answer its readiness probe)")
    if autoscaling and head_running:
        if not sidecar:
            problems.append("the autoscaler sidecar is not running")
        if age is None:
            problems.append("the autoscaler has not reported yet")
        elif age > STALE_AFTER_S:
            problems.append(f"the autoscaler's last report is {age:.0f} s old")
    if kuberay.get("state") == "failed":
        problems.append(f"the RayCluster failed: {kuberay.get('reason') or '-'}")

    doc: Obj = {"groups": {}, "nodes": []}
    if report and ready:
        doc.update(report)
    else:
        if report:
            doc["last_known"] = {k: report[k] for k in LAST_KNOWN_KEYS if k in report}
            doc["last_known"]["updated_at"] = report.get("updated_at")
        doc["groups"], doc["nodes"] = pod_groups(cluster, pods)
    if not autoscaling:  # nothing reports but the pods, which are the truth here
        doc["groups"], doc["nodes"] = pod_groups(cluster, pods)
    doc["events"] = (report or {}).get("events") or []
    doc["state"] = ("suspended" if suspended else "down" if not head_running
                    else "running" if not problems else "degraded")
    doc["problems"] = problems
    doc["name"] = f"{meta.get('namespace')}/{meta['name']}"
    port = endpoints.get("gcs-server") or endpoints.get("gcs") or "6379"
    doc["address"] = f"{head_ip}:{port}" if head_ip else None
    dash = endpoints.get("dashboard") or "8265"
    doc["dashboard"] = f"http://{head_ip}:{dash}" if head_ip else None
    doc["head_running"] = head_running
    doc["gcs_reachable"] = ready
    doc["autoscaling"] = autoscaling
    doc["autoscaler_running"] = sidecar
    doc["report_age_s"] = age
    doc["head"] = {"pod": head["metadata"]["name"] if head else None, "pid": None,
                   "fault_tolerance": "gcsFaultToleranceOptions" in spec or None,
                   "storage": "redis" if "gcsFaultToleranceOptions" in spec else None,
                   "restarts": None, "restarted_at": None}
    doc["kubernetes"] = {"namespace": meta.get("namespace"), "status": kuberay,
                         "conditions": conditions, "queue": queue}
    return doc
