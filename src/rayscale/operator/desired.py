"""What a RayCluster should own: a head pod, a headless head Service, worker pods.

Pure functions from the parsed spec (and the raw pod templates) to manifests,
as plain dicts ready for the API. The `ray start` command comes from the one
builder (:mod:`rayscale.raystart`) as an argument list, with resources from
the spec's one derivation, so Ray, the planner and the pod agree. Token
authentication (``authOptions``) is :mod:`rayscale.operator.auth`'s, GCS fault
tolerance (env, annotations, ``--redis-password``) :mod:`rayscale.operator.gcs_ft`'s.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from rayscale import cloudprobe
from rayscale.api import RayCluster, WorkerGroupSpec
from rayscale.labels import (
    CLUSTER_LABEL,
    DEFAULT_HEAD_PORTS,
    GROUP_LABEL,
    GROUP_LABEL_K8S,
    HEAD_GROUP,
    IS_RAY_NODE_LABEL,
    NODE_LABEL,
    NODE_TYPE_LABEL,
    ORIGIN_CRD_LABEL,
    SERVE_LABEL,
)
from rayscale.operator import auth, gcs_ft, probes
from rayscale.ports import free_port
from rayscale.raystart import (
    DEMAND_PULL_ENV,
    DEMAND_PULL_MS,
    RayStart,
    node_labels,
    ray_start_argv,
)

MANAGED_BY = "app.kubernetes.io/created-by"

SHARED_PORT_BASE = 20000  # shared-network mode: per-cluster ports from here (even, +1)
SHARED_PORT_PAIRS = 5000


@dataclass(frozen=True)
class PodSettings:
    """How pods run. ``shared_network``: every pod shares one network namespace (the
    dev cluster's virtual node gives each its own loopback IP), so Ray must bind
    the pod IP and take no fixed port it would otherwise share."""

    shared_network: bool = False
    ray_executable: str = "ray"


def head_service_name(cluster: str) -> str:
    return f"{cluster}-head-svc"


def head_ports(spec: RayCluster, settings: PodSettings) -> dict[str, int]:
    """The head's named ports: the container's own, else KubeRay's defaults.

    With a shared pod network, Ray's GCS and client server listen on every
    address, so two clusters' heads would collide on 6379 / 10001: each
    cluster gets its own pair, derived from its uid (stable across restarts).
    """
    declared = spec.head.template.spec.ray_container.ports
    ports = {p.name: p.container_port for p in declared if p.name} or dict(DEFAULT_HEAD_PORTS)
    if settings.shared_network:
        uid = spec.metadata.uid or f"{spec.namespace}/{spec.name}"
        pair = int(hashlib.sha256(uid.encode()).hexdigest(), 16) % SHARED_PORT_PAIRS
        ports["gcs-server"] = SHARED_PORT_BASE + 2 * pair
        ports["client"] = SHARED_PORT_BASE + 2 * pair + 1
    return ports


def gcs_port(spec: RayCluster, settings: PodSettings) -> int:
    return head_ports(spec, settings).get("gcs-server", DEFAULT_HEAD_PORTS["gcs-server"])


def head_address(spec: RayCluster, settings: PodSettings) -> str:
    service = f"{head_service_name(spec.name)}.{spec.namespace}.svc.cluster.local"
    return f"{service}:{gcs_port(spec, settings)}"


def cluster_labels(spec: RayCluster) -> dict[str, str]:
    return {CLUSTER_LABEL: spec.name}


def head_labels(spec: RayCluster) -> dict[str, str]:
    return {**cluster_labels(spec), NODE_TYPE_LABEL: "head", GROUP_LABEL_K8S: HEAD_GROUP,
            IS_RAY_NODE_LABEL: "yes", MANAGED_BY: "rayscale"}


def worker_labels(spec: RayCluster, group: str) -> dict[str, str]:
    return {**cluster_labels(spec), NODE_TYPE_LABEL: "worker", GROUP_LABEL_K8S: group,
            IS_RAY_NODE_LABEL: "yes", MANAGED_BY: "rayscale"}


def serves(spec: RayCluster) -> bool:
    """Whether the cluster is a RayService's (its pods may take Serve traffic)."""
    return spec.metadata.labels.get(ORIGIN_CRD_LABEL) == "RayService"


def serve_labels(spec: RayCluster, head: bool, shared_network: bool = False
                 ) -> dict[str, str]:
    """KubeRay's ``ray.io/serve`` on a RayService's pods: ``"false"`` on the head until
    the RayService controller has seen its Serve proxy healthy; ``"true"`` on workers,
    whose readiness probe asks their proxy instead. On a shared pod network Serve runs
    one proxy, on the head's address (rayservice_desired.serve_config_body): workers
    take no Serve traffic there (``"false"``)."""
    if not serves(spec):
        return {}
    return {SERVE_LABEL: "false" if head or shared_network else "true"}


def worker_serves(spec: RayCluster, settings: PodSettings) -> bool:
    """Whether a worker of ``spec`` runs a Serve proxy (its readiness then asks it)."""
    return serves(spec) and not settings.shared_network


def serve_port_of(spec: RayCluster, group: WorkerGroupSpec | None = None) -> int:
    """The Serve proxy's port on a pod: the container's ``serve`` port, else the
    head's (Serve's HTTP port is one per cluster), else 8000."""
    containers = [group.template.spec.ray_container] if group is not None else []
    for container in [*containers, spec.head.template.spec.ray_container]:
        for port in container.ports:
            if port.name == "serve":
                return port.container_port
    return DEFAULT_HEAD_PORTS["serve"]


def head_pod(spec: RayCluster, settings: PodSettings) -> dict[str, Any]:
    ports = head_ports(spec, settings)
    overrides = {"dashboard-host": "$(POD_IP)",
                 "ray-client-server-port": str(ports["client"])} if settings.shared_network else {}
    # rayscale's sidecar is the autoscaler: Ray's built-in monitor is not started
    overrides["no-monitor"] = "true"
    agent = probes.agent_port(spec.head.ray_start_params, settings.shared_network)
    moved = _shared_network_ports(settings, agent, spec.head.ray_start_params)
    start = RayStart(
        node_ip="$(POD_IP)",
        resources=spec.head.ray_resources,
        gcs_port=ports.get("gcs-server", DEFAULT_HEAD_PORTS["gcs-server"]),
        labels=node_labels(spec.head.labels, {GROUP_LABEL: HEAD_GROUP}),
        # GCS fault tolerance: --redis-password/--redis-username from the env
        overrides={**overrides, **moved, **gcs_ft.head_start_params(spec)},
    )
    argv = ray_start_argv(settings.ray_executable, spec.head.ray_start_params, start)
    pod = _pod(spec, spec.head.template.to_manifest(), f"{spec.name}-head-",
               {**spec.head.labels, **head_labels(spec), **serve_labels(spec, head=True)}, argv,
               ports=ports, restart="Always", private_tmp=settings.shared_network)
    _publish_metrics_port(pod, spec.head.ray_start_params, moved)
    ray = pod["spec"]["containers"][0]
    if spec.spec.enable_in_tree_autoscaling and not any(
            e.get("name") == DEMAND_PULL_ENV for e in ray["env"]):
        # new demand reaches rayscale's sidecar within 0.2 s, not 1 s (raystart.py)
        ray["env"].append({"name": DEMAND_PULL_ENV, "value": DEMAND_PULL_MS})
    probes.inject(ray, head=True, port=agent)  # KubeRay's defaults
    gcs_ft.configure_head(pod, spec)  # ray.io/ft-enabled; Redis address, password, namespace
    return pod


def worker_pod(spec: RayCluster, group: WorkerGroupSpec, settings: PodSettings) -> dict[str, Any]:
    agent = probes.agent_port(group.ray_start_params, settings.shared_network)
    moved = _shared_network_ports(settings, agent, group.ray_start_params)
    start = RayStart(
        node_ip="$(POD_IP)",
        resources=group.ray_resources,
        address=head_address(spec, settings),
        labels=node_labels(group.labels, {GROUP_LABEL: group.group_name,
                                          NODE_LABEL: "$(POD_NAME)"}),
        overrides=moved,
    )
    argv = ray_start_argv(settings.ray_executable, group.ray_start_params, start)
    # a worker that exits (drained, or crashed) is replaced by the operator, not restarted
    # in place: an in-place restart would rejoin Ray behind the autoscaler's back
    pod = _pod(spec, group.template.to_manifest(), f"{spec.name}-{group.group_name}-worker-",
               {**group.labels, **worker_labels(spec, group.group_name),
                **serve_labels(spec, head=False, shared_network=settings.shared_network)},
               argv, ports=None,
               restart="Never", private_tmp=settings.shared_network)
    _publish_metrics_port(pod, group.ray_start_params, moved)
    # KubeRay's defaults; a RayService's workers are ready when their Serve proxy is
    probes.inject(pod["spec"]["containers"][0], head=False, port=agent,
                  serve_port=serve_port_of(spec, group) if worker_serves(spec, settings) else None)
    gcs_ft.configure_worker(pod, spec)  # with fault tolerance: outlive a head restart
    return pod


def head_service(spec: RayCluster, settings: PodSettings) -> dict[str, Any]:
    ports = [{"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
             for name, port in head_ports(spec, settings).items()]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": head_service_name(spec.name), "namespace": spec.namespace,
                     "labels": {**cluster_labels(spec), MANAGED_BY: "rayscale"}},
        "spec": {
            "clusterIP": "None",  # headless: DNS answers with the head pod's IP
            "publishNotReadyAddresses": True,  # workers may resolve it before Ray is up
            "selector": {CLUSTER_LABEL: spec.name, NODE_TYPE_LABEL: "head"},
            "ports": ports,
        },
    }


RAY_TMP = "/tmp/ray"


def _private_ray_tmp(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    """Give Ray its own /tmp/ray when pods share a machine's file system.

    Raylets started at the same moment in one temp dir race for the same socket
    names and abort; an emptyDir there is each pod's own (as on a real node).
    """
    mounts = container.setdefault("volumeMounts", [])
    if any(m.get("mountPath") == RAY_TMP for m in mounts):
        return
    volumes = pod_spec.setdefault("volumes", [])
    volumes.append({"name": "rayscale-ray-tmp", "emptyDir": {}})
    mounts.append({"name": "rayscale-ray-tmp", "mountPath": RAY_TMP})


METRICS_PORT_PARAM = "metrics-export-port"
PROMETHEUS_PORT_ANNOTATION = "prometheus.io/port"


def _shared_network_ports(settings: PodSettings, agent: int,
                          params: dict[str, str]) -> dict[str, str]:
    """Per-pod ports where every pod shares one network namespace.

    Ray's dashboard agent binds a fixed port (52365) on every node otherwise, on the
    pod IP and on 127.0.0.1: each pod gets its own, which its probes ask. A fixed
    ``metrics-export-port`` (KubeRay's 8080, the seeds' monitoring switch) is bound
    on every address: each pod gets its own too (:func:`_publish_metrics_port` then
    points the pod's scrape annotation and container port at it)."""
    if not settings.shared_network:
        return {}
    ports = {probes.AGENT_PORT_PARAM: str(agent)}
    if params.get(METRICS_PORT_PARAM, "0").strip() not in ("", "0"):
        ports[METRICS_PORT_PARAM] = str(free_port())
    return ports


def _publish_metrics_port(pod: dict[str, Any], params: dict[str, str],
                          overrides: dict[str, str]) -> None:
    """Where a pod's metrics port was moved (shared network), say so where Prometheus
    looks: the ``prometheus.io/port`` annotation and the Ray container's port that
    named the old number."""
    old, new = params.get(METRICS_PORT_PARAM, "").strip(), overrides.get(METRICS_PORT_PARAM)
    if new is None or old == new:
        return
    annotations = pod.get("metadata", {}).get("annotations") or {}
    if annotations.get(PROMETHEUS_PORT_ANNOTATION) == old:
        annotations[PROMETHEUS_PORT_ANNOTATION] = new
    for port in pod["spec"]["containers"][0].get("ports") or []:
        if str(port.get("containerPort")) == old:
            port["containerPort"] = int(new)




def _pod(
    cluster: RayCluster,
    template: dict[str, Any],
    generate_name: str,
    labels: dict[str, str],
    argv: list[str],
    ports: dict[str, int] | None,
    restart: str,
    private_tmp: bool,
) -> dict[str, Any]:
    """A pod from a group's template, its labels the template's updated with ``labels``:
    the group's Ray node labels (pod labels too, as KubeRay's ``mergeLabels`` makes
    them), then rayscale's own, which win (as KubeRay keeps its ``ray.io/cluster``,
    ``ray.io/group`` and ``ray.io/node-type``)."""
    template = copy.deepcopy(template)
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    containers = spec.get("containers") or [{"name": "ray"}]
    ray = containers[0]
    # rayscale runs Ray itself: the container's command is `ray start`, as a list
    ray["command"] = argv
    ray.pop("args", None)
    forced: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # rayscale's sidecar speaks Ray's autoscaler v2: with it the GCS tells drivers
        # so, and `request_resources` (Ray Data's autoscaling asks through it) lands in
        # the cluster resource constraints the sidecar reads; under v1 it would go to a
        # key-value entry nobody reads
        {"name": "RAY_enable_autoscaler_v2", "value": "1"},
    ]
    names = {var["name"] for var in forced}
    env = [e for e in ray.get("env", []) if e.get("name") not in names] + forced
    # KubeRay's, on every Ray container (Ray's Kubernetes token auth names the
    # RayCluster by them); a template's own win
    defaults: list[dict[str, Any]] = [
        {"name": "RAY_CLUSTER_NAME", "valueFrom": {
            "fieldRef": {"fieldPath": f"metadata.labels['{CLUSTER_LABEL}']"}}},
        {"name": "RAY_CLUSTER_NAMESPACE", "valueFrom": {
            "fieldRef": {"fieldPath": "metadata.namespace"}}},
        # no usage reports leaving the cluster network, not even Ray's "usage stats
        # are disabled" notice (cloudprobe)
        *({"name": k, "value": v} for k, v in cloudprobe.NO_REPORT_ENV.items()),
        # Ray's node type and instance id (KubeRay sets them for autoscaler v2): `ray
        # status` and the dashboard name each node by its group and pod
        {"name": "RAY_NODE_TYPE_NAME", "valueFrom": {
            "fieldRef": {"fieldPath": f"metadata.labels['{GROUP_LABEL_K8S}']"}}},
        {"name": "RAY_CLOUD_INSTANCE_ID", "valueFrom": {
            "fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    for var in defaults:
        if not any(e.get("name") == var["name"] for e in env):
            env.append(var)
    ray["env"] = env
    containers[0] = ray
    spec["containers"] = containers
    if cluster.spec.token_auth:  # RAY_AUTH_MODE=token and the token's source
        auth.configure_pod(spec, cluster)
    else:
        # no token auth inside the cluster network unless the template asks for it
        # (KubeRay without authOptions: Ray's own default would depend on the image)
        auth.disable_unless_set(ray)
    if ports is not None and not ray.get("ports"):
        ray["ports"] = [{"name": n, "containerPort": p} for n, p in ports.items()]
    if private_tmp:
        _private_ray_tmp(spec, ray)
    spec.setdefault("restartPolicy", restart)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "labels": {**(meta.get("labels") or {}), **labels},
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": spec,
    }
