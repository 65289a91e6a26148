"""What a RayJob should own: its RayCluster and, in K8sJobMode, the submitter Job.

Pure functions from the RayJob document to manifests (plain dicts ready for the
API), named and labelled as KubeRay v1.7 names and labels them
(``controllers/ray/common/job.go``, ``rayjob_controller.go``), so tools that
look for KubeRay's objects find ours.

The submitter runs a fixed Python program (:data:`SUBMITTER_PROGRAM`) whose
arguments are the user's entrypoint and options: an argument list, never a
shell string (KubeRay joins them into a ``bash -c`` line). It does what
KubeRay's shell line does: wait for the dashboard, ``ray job submit
--no-wait`` unless the job already exists (a restarted submitter pod), then
``ray job logs --follow``. The token, when the cluster uses one, comes from
its Secret through the environment (``RAY_AUTH_TOKEN``), never from an
argument.
"""

from __future__ import annotations

import copy
import json
import secrets
import shlex
from typing import Any

import yaml

from rayscale.api import RayCluster
from rayscale.api.rayjob import RayJob
from rayscale.labels import DEFAULT_HEAD_PORTS, ORIGIN_CRD_LABEL, ORIGIN_NAME_LABEL
from rayscale.operator import auth
from rayscale.operator.desired import MANAGED_BY, head_service_name
from rayscale.spec import parse_cluster_spec

RAYJOB_CRD = "RayJob"
#: KubeRay's ``RayJobClusterSelectorKey``: the cluster a RayJob runs on instead of its own.
CLUSTER_SELECTOR_KEY = "ray.io/cluster"
SUBMITTER_CONTAINER = "ray-job-submitter"
DEFAULT_SUBMITTER_BACKOFF_LIMIT = 2  # KubeRay's
#: Kubernetes' ``rand.String`` alphabet (no vowels, no confusable digits), as KubeRay uses.
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

SUBMITTER_PROGRAM = """\
import os, subprocess, sys, time, urllib.request
address, job_id, submit = sys.argv[1], sys.argv[2], sys.argv[3:]
ray = [sys.executable, "-m", "ray.scripts.scripts", "job"]
token = os.environ.get("RAY_AUTH_TOKEN")
headers = {"Authorization": "Bearer " + token} if token else {}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    try:
        opener.open(urllib.request.Request(address + "/api/gcs_healthz", headers=headers),
                    timeout=5)
        break
    except Exception:
        print("Waiting for Ray Dashboard GCS to become healthy at " + address + " ...",
              flush=True)
        time.sleep(2)
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
if subprocess.run([*ray, "status", "--address", address, job_id], **quiet).returncode != 0:
    code = subprocess.run([*ray, "submit", "--address", address, "--no-wait",
                           "--submission-id", job_id, *submit]).returncode
    if code:
        sys.exit(code)
sys.exit(subprocess.run([*ray, "logs", "--address", address, "--follow", job_id]).returncode)
"""


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_ALPHANUMS) for _ in range(length))


def cluster_name_for(job_name: str, suffix: str) -> str:
    """KubeRay's ``GenerateRayClusterName``: ``<job>-<5 random>``."""
    return f"{job_name}-{suffix}"


def job_id_for(job_name: str, suffix: str) -> str:
    """KubeRay's ``GenerateRayJobId``: ``<job>-<5 random>``."""
    return f"{job_name}-{suffix}"


def origin_labels(job_name: str) -> dict[str, str]:
    return {ORIGIN_CRD_LABEL: RAYJOB_CRD, ORIGIN_NAME_LABEL: job_name}


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def ray_cluster(body: dict[str, Any], name: str, job: RayJob | None = None,
                job_id: str = "", python: str = "python",
                shared_network: bool = False) -> dict[str, Any]:
    """The RayCluster a RayJob owns: its ``rayClusterSpec`` as written (unknown fields
    kept), the RayJob's labels with KubeRay's origin labels. In SidecarMode the head
    pod also runs the submitter (KubeRay's ``ray-job-submitter`` container, the head's
    ``restartPolicy`` Never), against the dashboard in its own pod."""
    meta = body["metadata"]
    labels = {**(meta.get("labels") or {}), **origin_labels(meta["name"])}
    manifest = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "annotations": dict(meta.get("annotations") or {}),
                     "ownerReferences": [owner_reference(body)]},
        "spec": copy.deepcopy(body["spec"]["rayClusterSpec"]),
    }
    if job is not None and job.spec.submission_mode == "SidecarMode":
        _add_sidecar_submitter(manifest, job, job_id, python, shared_network)
    return manifest


def _add_sidecar_submitter(manifest: dict[str, Any], job: RayJob, job_id: str, python: str,
                           shared_network: bool) -> None:
    cluster = parse_cluster_spec(manifest)
    template = manifest["spec"]["headGroupSpec"]["template"]
    pod_spec = template.setdefault("spec", {})
    port = dashboard_port({"status": {"endpoints": {
        p.name: p.container_port for p in cluster.head.template.spec.ray_container.ports
        if p.name == "dashboard"}}})
    # the dashboard binds the pod IP where pods share one network (the dev cluster)
    host = "$(POD_IP)" if shared_network else "127.0.0.1"
    address = f"http://{host}:{port}"
    container = _default_container(cluster)
    container["command"] = [python, "-c", SUBMITTER_PROGRAM, address, job_id,
                            *submit_options(job)]
    container["env"] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "RAY_DASHBOARD_ADDRESS", "value": address.removeprefix("http://")},
        {"name": "RAY_JOB_SUBMISSION_ID", "value": job_id},
    ]
    if auth.token_auth(cluster):
        auth.set_container_auth(container, cluster)
    else:
        auth.disable_unless_set(container)
    pod_spec["containers"] = [*(pod_spec.get("containers") or []), container]
    pod_spec["restartPolicy"] = "Never"


def dashboard_port(cluster: dict[str, Any]) -> int:
    """The head's dashboard port: the cluster's status endpoint, else the default."""
    endpoints = (cluster.get("status") or {}).get("endpoints") or {}
    try:
        return int(endpoints.get("dashboard") or DEFAULT_HEAD_PORTS["dashboard"])
    except ValueError:
        return DEFAULT_HEAD_PORTS["dashboard"]


def dashboard_url(cluster: dict[str, Any]) -> str:
    """KubeRay's ``status.dashboardURL``: the head Service's name and the dashboard port."""
    meta = cluster["metadata"]
    return (f"{head_service_name(meta['name'])}.{meta['namespace']}.svc.cluster.local:"
            f"{dashboard_port(cluster)}")


def runtime_env(job: RayJob) -> dict[str, Any] | None:
    """``runtimeEnvYAML`` as a mapping (validated before: see rayjob_decide.validate)."""
    text = job.spec.runtime_env_yaml
    if not text or not text.strip():
        return None
    loaded = yaml.safe_load(text)
    return dict(loaded) if isinstance(loaded, dict) else None


def submit_options(job: RayJob) -> list[str]:
    """``ray job submit``'s options and entrypoint, after ``--submission-id``."""
    spec = job.spec
    out: list[str] = []
    env = runtime_env(job)
    if env:
        out += ["--runtime-env-json", json.dumps(env)]
    if spec.metadata:
        out += ["--metadata-json", json.dumps(spec.metadata)]
    if spec.entrypoint_num_cpus:
        out += ["--entrypoint-num-cpus", f"{spec.entrypoint_num_cpus:f}"]
    if spec.entrypoint_num_gpus:
        out += ["--entrypoint-num-gpus", f"{spec.entrypoint_num_gpus:f}"]
    if spec.entrypoint_resources:
        out += ["--entrypoint-resources", spec.entrypoint_resources]
    # KubeRay puts the entrypoint into a bash line, which splits it into words that
    # `ray job submit` joins again (quoting words with spaces): the same words here,
    # split as the shell would (quotes and escapes) but without expanding anything
    return [*out, "--", *shlex.split(spec.entrypoint or "")]


def submitter_job(body: dict[str, Any], job: RayJob, cluster: RayCluster, job_id: str,
                  address: str, python: str = "python") -> dict[str, Any]:
    """The batch/v1 Job running ``ray job submit`` and ``ray job logs --follow`` (KubeRay's
    K8sJobMode). ``address`` is ``http://<head service>:<dashboard port>``."""
    meta = body["metadata"]
    spec = body["spec"]
    template = copy.deepcopy(spec.get("submitterPodTemplate")) or {
        "spec": {"restartPolicy": "Never", "containers": [_default_container(cluster)]},
    }
    pod_spec = template.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    container = pod_spec["containers"][0]
    if not container.get("command"):
        container["command"] = [python, "-c", SUBMITTER_PROGRAM, address, job_id,
                                *submit_options(job)]
        container.pop("args", None)
    env = container.setdefault("env", [])
    names = {e.get("name") for e in env}
    for name, value in (("RAY_DASHBOARD_ADDRESS", address.removeprefix("http://")),
                        ("RAY_JOB_SUBMISSION_ID", job_id)):
        if name not in names:
            env.append({"name": name, "value": value})
    if auth.token_auth(cluster):
        auth.set_container_auth(container, cluster)  # RAY_AUTH_TOKEN from the Secret
    else:
        auth.disable_unless_set(container)
    template.setdefault("metadata", {}).setdefault("labels", {}).update(origin_labels(meta["name"]))
    backoff = (spec.get("submitterConfig") or {}).get("backoffLimit")
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                     "labels": {**origin_labels(meta["name"]), MANAGED_BY: "rayscale"},
                     "ownerReferences": [owner_reference(body)]},
        "spec": {"backoffLimit": DEFAULT_SUBMITTER_BACKOFF_LIMIT if backoff is None else backoff,
                 "template": template},
    }


def _default_container(cluster: RayCluster) -> dict[str, Any]:
    image = cluster.head.template.spec.ray_container.image
    return {
        "name": SUBMITTER_CONTAINER, "image": image or "rayproject/ray",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                      "requests": {"cpu": "500m", "memory": "200Mi"}},
    }
