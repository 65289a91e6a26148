"""What a RayService should own: its RayClusters, the head Service and the serve Service.

Pure functions from the RayService document to manifests (plain dicts ready for
the API), named, labelled and annotated as KubeRay v1.7 does it
(``rayservice_controller.go``, ``common/service.go``), so tools that look for
KubeRay's objects find ours:

- a RayCluster ``<service>-<5 random>`` whose spec is ``rayClusterConfig`` as
  written, labelled ``ray.io/originated-from-crd: RayService`` and
  ``ray.io/originated-from-cr-name: <service>``, annotated with the hash of the
  spec (``ray.io/hash-without-replicas-and-workers-to-delete``), its number of
  worker groups and the operator's version, owned by the RayService;
- ``<service>-head-svc``: the head of the cluster that serves (headless, as
  the RayCluster's own);
- ``<service>-serve-svc`` (or ``spec.serveService``): the ports named ``serve``
  or ``serve-*``, selecting ``ray.io/cluster: <serving cluster>`` and
  ``ray.io/serve: "true"``.

The hash follows KubeRay's rules (what it mutes: ``suspend``; worker groups'
``replicas``, ``minReplicas``, ``maxReplicas`` and ``workersToDelete``;
tolerations and scheduling gates of every template; ``upgradeStrategy``) over
the canonical JSON of the spec as written. It is not byte-identical to
KubeRay's (Go serialises its typed structs), so a cluster KubeRay's operator
made is recognised by its version annotation instead: the active one is
re-annotated in place, as KubeRay does after its own upgrades.

On a shared pod network (the dev cluster: every pod is a process on this
machine with its own loopback IP) Serve runs one proxy, on the head, listening
on the head pod's address only (:func:`serve_config_body`); ports are still
shared by every process of the machine, so two clusters of one RayService (old
and new, during an upgrade) would share port 8000. Each cluster then gets a
serve port of its own: written into its head container's ``serve`` port, put into the
Serve config it is given (``http_options.port``), and used as the serve
Service's ``targetPort`` (the Service's own port stays the one the RayService
declares).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import yaml

from rayscale import __version__
from rayscale.api import RayCluster
from rayscale.labels import (
    CLUSTER_LABEL,
    DEFAULT_HEAD_PORTS,
    NODE_TYPE_HEAD,
    NODE_TYPE_LABEL,
    ORIGIN_CRD_LABEL,
    ORIGIN_NAME_LABEL,
    SERVE_LABEL,
)
from rayscale.operator.desired import MANAGED_BY, PodSettings, head_service

RAYSERVICE_CRD = "RayService"
#: KubeRay's ``MaxRayServiceNameLength``: a cluster name ``<service>-<5>`` must fit 53.
MAX_NAME_LENGTH = 47
HASH_ANNOTATION = "ray.io/hash-without-replicas-and-workers-to-delete"
NUM_WORKER_GROUPS_ANNOTATION = "ray.io/num-worker-groups"
VERSION_ANNOTATION = "ray.io/kuberay-version"
#: What this operator writes into ``ray.io/kuberay-version``: a cluster with another
#: value (KubeRay's ``v1.7.0``, an older rayscale) is re-annotated in place.
OPERATOR_VERSION = f"rayscale-{__version__}"
IDENTIFIER_LABEL = "ray.io/identifier"
SERVE_PORT_NAME = "serve"
DEFAULT_SERVE_PORT = DEFAULT_HEAD_PORTS["serve"]
#: The Serve proxy's health path (KubeRay's ``RayServeProxyHealthPath``).
PROXY_HEALTH_PATH = "/-/healthz"


def origin_labels(service: str) -> dict[str, str]:
    return {ORIGIN_CRD_LABEL: RAYSERVICE_CRD, ORIGIN_NAME_LABEL: service}


def cluster_name(service: str, suffix: str) -> str:
    """KubeRay's ``GenerateRayClusterName``: ``<service>-<5 random>``."""
    return f"{service}-{suffix}"


def head_service_name(service: str) -> str:
    return f"{service}-head-svc"


def serve_service_name(service: str) -> str:
    """KubeRay's ``GenerateServeServiceName``."""
    return f"{service}-serve-svc"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": "ray.io/v1", "kind": RAYSERVICE_CRD, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


# --------------------------------------------------------------------- the hash


def _mute_template(template: Any) -> None:
    spec = template.get("spec") if isinstance(template, dict) else None
    if isinstance(spec, dict):
        spec.pop("tolerations", None)
        spec.pop("schedulingGates", None)


def hashed_spec(config: dict[str, Any], groups: int | None = None) -> dict[str, Any]:
    """``rayClusterConfig`` without what KubeRay's hash mutes (see the module); with
    ``groups``, only the first ``groups`` worker groups (KubeRay's partial compare)."""
    spec = copy.deepcopy(config)
    spec.pop("suspend", None)
    spec.pop("upgradeStrategy", None)
    _mute_template((spec.get("headGroupSpec") or {}).get("template"))
    workers = list(spec.get("workerGroupSpecs") or [])
    if groups is not None:
        workers = workers[:groups]
    for group in workers:
        if not isinstance(group, dict):
            continue
        for key in ("replicas", "minReplicas", "maxReplicas"):
            group.pop(key, None)
        strategy = group.get("scaleStrategy")
        if isinstance(strategy, dict):
            strategy.pop("workersToDelete", None)
            if not strategy:
                group.pop("scaleStrategy")
        _mute_template(group.get("template"))
    if workers or "workerGroupSpecs" in spec:
        spec["workerGroupSpecs"] = workers
    return spec


def spec_hash(config: dict[str, Any], groups: int | None = None) -> str:
    """The hash KubeRay annotates a RayService's cluster with (SHA-1 of the canonical
    JSON, base32hex as KubeRay prints it)."""
    text = json.dumps(hashed_spec(config, groups), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).digest()
    return base64.b32hexencode(digest).decode()


def worker_group_count(config: dict[str, Any]) -> int:
    return len(config.get("workerGroupSpecs") or [])


# ------------------------------------------------------------------ the cluster


def _ray_container(spec: dict[str, Any]) -> dict[str, Any] | None:
    containers = ((spec.get("headGroupSpec") or {}).get("template") or {}).get(
        "spec", {}).get("containers") or []
    return containers[0] if containers and isinstance(containers[0], dict) else None


def declared_ports(spec: dict[str, Any]) -> dict[str, int]:
    """The head container's ports by name (KubeRay names an unnamed one
    ``<number>-port``); KubeRay's defaults when it declares none."""
    container = _ray_container(spec) or {}
    out: dict[str, int] = {}
    for port in container.get("ports") or []:
        number = port.get("containerPort")
        if isinstance(number, int):
            out[port.get("name") or f"{number}-port"] = number
    return out or dict(DEFAULT_HEAD_PORTS)


def is_serving_port(name: str) -> bool:
    """KubeRay's ``isServingPort``: ``serve`` or ``serve-*`` (``serve-grpc``)."""
    return name == SERVE_PORT_NAME or name.startswith(SERVE_PORT_NAME + "-")


def serve_ports(spec: dict[str, Any]) -> dict[str, int]:
    """The serving ports of a cluster spec's head (``serve``, ``serve-*``)."""
    return {n: p for n, p in declared_ports(spec).items() if is_serving_port(n)}


def serve_port(spec: dict[str, Any]) -> int:
    """KubeRay's ``GetServePort``: the head container's ``serve`` port, else 8000."""
    return declared_ports(spec).get(SERVE_PORT_NAME, DEFAULT_SERVE_PORT)


def with_serve_port(spec: dict[str, Any], port: int) -> None:
    """Give the head container's ``serve`` port the number ``port`` (the shared pod
    network's per-cluster port; see the module). Ports the container did not declare
    become KubeRay's defaults, declared (as the head pod would get them anyway)."""
    container = _ray_container(spec)
    if container is None:
        return
    ports = [dict(p) for p in container.get("ports") or []]
    if not ports:
        ports = [{"name": n, "containerPort": p} for n, p in DEFAULT_HEAD_PORTS.items()]
    named = [p for p in ports if p.get("name") == SERVE_PORT_NAME]
    if named:
        named[0]["containerPort"] = port
    else:
        ports.append({"name": SERVE_PORT_NAME, "containerPort": port})
    container["ports"] = ports


def ray_cluster(body: dict[str, Any], name: str, shared_serve_port: int | None = None,
                current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The RayCluster a RayService owns (KubeRay's ``constructRayClusterForRayService``):
    ``rayClusterConfig`` as written, the RayService's labels and annotations with
    KubeRay's. ``shared_serve_port``: the cluster's own serve port on a shared pod
    network. ``current``: the cluster as it is, for an update in place, whose
    ``suspend`` (Kueue's once the cluster exists), worker replicas and
    ``workersToDelete`` (the autoscaler's) and serve port stay."""
    meta = body["metadata"]
    config = body["spec"]["rayClusterConfig"]
    labels = {**(meta.get("labels") or {}), **origin_labels(meta["name"])}
    annotations = {
        **(meta.get("annotations") or {}),
        HASH_ANNOTATION: spec_hash(config),
        NUM_WORKER_GROUPS_ANNOTATION: str(worker_group_count(config)),
        VERSION_ANNOTATION: OPERATOR_VERSION,
    }
    spec = copy.deepcopy(config)
    if current is not None:
        _keep_runtime_fields(spec, current.get("spec") or {})
    if shared_serve_port is not None:
        with_serve_port(spec, shared_serve_port)
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "annotations": annotations, "ownerReferences": [owner_reference(body)]},
        "spec": spec,
    }


def _keep_runtime_fields(spec: dict[str, Any], current: dict[str, Any]) -> None:
    if "suspend" in current:
        spec["suspend"] = current["suspend"]
    else:
        spec.pop("suspend", None)
    now = {g.get("groupName"): g for g in current.get("workerGroupSpecs") or []
           if isinstance(g, dict)}
    for group in spec.get("workerGroupSpecs") or []:
        old = now.get(group.get("groupName"))
        if old is None:
            continue
        if "replicas" in old:
            group["replicas"] = old["replicas"]
        deleting = (old.get("scaleStrategy") or {}).get("workersToDelete")
        if deleting:
            group.setdefault("scaleStrategy", {})["workersToDelete"] = deleting


def shared_serve_port_of(cluster: dict[str, Any]) -> int:
    """A cluster's serve port (its head container's), to keep it across an update."""
    return serve_port(cluster.get("spec") or {})


# ----------------------------------------------------------------- the Services


def rayservice_head_service(body: dict[str, Any], cluster: RayCluster,
                            settings: PodSettings) -> dict[str, Any]:
    """``<service>-head-svc``: the serving cluster's head Service, renamed and labelled
    as KubeRay's ``BuildHeadServiceForRayService`` does (headless, its head ports)."""
    meta = body["metadata"]
    svc = head_service(cluster, settings)
    svc["metadata"] = {
        "name": head_service_name(meta["name"]), "namespace": meta["namespace"],
        "labels": {**origin_labels(meta["name"]), NODE_TYPE_LABEL: NODE_TYPE_HEAD,
                   IDENTIFIER_LABEL: f"{meta['name']}-{NODE_TYPE_HEAD}"[:63],
                   MANAGED_BY: "rayscale"},
        "ownerReferences": [owner_reference(body)],
    }
    return svc


def serve_service(body: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """``<service>-serve-svc`` (KubeRay's ``BuildServeServiceForRayService``) pointing at
    ``cluster``: its serving ports (the ports the RayService declares; their
    ``targetPort`` the cluster's own), or ``spec.serveService`` with our selector and
    labels, its same-named ports winning. ValueError when there is no serving port to
    give it (KubeRay's message)."""
    meta = body["metadata"]
    name = meta["name"]
    config = body["spec"]["rayClusterConfig"]
    wanted = serve_ports(config)
    actual = serve_ports(cluster.get("spec") or {})
    ports = [{"name": n, "port": p, "targetPort": actual.get(n, p), "protocol": "TCP"}
             for n, p in sorted(wanted.items())]
    user = body["spec"].get("serveService")
    if not ports and not user:
        raise ValueError("Please specify a port named 'serve' (or with the prefix 'serve-', "
                         "e.g. 'serve-grpc') in the Ray head container; otherwise, the "
                         "Kubernetes service for Ray Serve will not be created.")
    labels = {**origin_labels(name), SERVE_LABEL: f"{name}-serve", MANAGED_BY: "rayscale"}
    selector = {CLUSTER_LABEL: cluster["metadata"]["name"], SERVE_LABEL: "true"}
    service_type = (config.get("headGroupSpec") or {}).get("serviceType")
    svc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": serve_service_name(name), "namespace": meta["namespace"],
                     "labels": labels},
        "spec": {"selector": selector, "ports": ports},
    }
    if user:
        user_meta = user.get("metadata") or {}
        spec = copy.deepcopy(user.get("spec") or {})
        by_name = {p.get("name"): dict(p) for p in spec.get("ports") or []}
        if ports:
            merged = []
            for port in ports:
                mine = by_name.get(port["name"])
                if mine is not None:
                    mine.setdefault("targetPort", port["targetPort"])
                    merged.append(mine)
                else:
                    merged.append(port)
            spec["ports"] = merged
        spec["selector"] = selector
        svc["metadata"] = {
            "name": user_meta.get("name") or serve_service_name(name),
            "namespace": meta["namespace"],
            "labels": {**(user_meta.get("labels") or {}), **labels},
            "annotations": dict(user_meta.get("annotations") or {}),
        }
        svc["spec"] = spec
    if service_type and not svc["spec"].get("type"):
        svc["spec"]["type"] = service_type
    svc["metadata"]["ownerReferences"] = [owner_reference(body)]
    return svc


def serve_service_name_of(body: dict[str, Any]) -> str:
    """The serve Service's name: ``spec.serveService``'s, else ``<service>-serve-svc``."""
    user = body["spec"].get("serveService") or {}
    return str((user.get("metadata") or {}).get("name") or
               serve_service_name(body["metadata"]["name"]))


def selected_cluster(service: dict[str, Any] | None) -> str | None:
    """The cluster a Service points at (its ``ray.io/cluster`` selector)."""
    if service is None:
        return None
    return ((service.get("spec") or {}).get("selector") or {}).get(CLUSTER_LABEL)


# -------------------------------------------------------------- the Serve config


def parse_serve_config(text: str | None) -> dict[str, Any]:
    """``serveConfigV2`` as a mapping; ValueError saying what is wrong with it."""
    if text is None or not text.strip():
        return {}
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"must be a YAML mapping (a Serve config), got {type(loaded).__name__}")
    try:
        json.dumps(loaded)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"has values JSON cannot carry: {exc}") from None
    return loaded


def serve_config_body(text: str | None, shared_serve_port: int | None = None,
                      head_ip: str | None = None) -> str:
    """What is PUT to ``/api/serve/applications/``: the config as JSON. On a shared pod
    network (``shared_serve_port``: the cluster's own HTTP port, see the module) Serve's
    one proxy listens on the head pod's loopback address ``head_ip`` only: Serve's
    default host is every address, which on the dev cluster is the machine's."""
    config = parse_serve_config(text)
    if shared_serve_port is not None:
        http = dict(config.get("http_options") or {})
        http["port"] = shared_serve_port
        if head_ip is not None:
            http["host"] = head_ip
        config["http_options"] = http
        config["proxy_location"] = "HeadOnly"
    return json.dumps(config)
