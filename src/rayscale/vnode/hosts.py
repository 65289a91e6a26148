"""Service names for pods, without DNS: a per-pod ``/etc/hosts`` kept current.

Every pod process runs in its own mount namespace where the vnode has
bind-mounted a pod-specific hosts file over ``/etc/hosts`` (and a resolv.conf
naming only 127.0.0.1, so no lookup ever leaves loopback). The vnode rewrites
these files in place whenever Services or pods change, so
``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``, ``<svc>.<ns>`` and, from
the same namespace, ``<svc>`` resolve to the addresses of the ready pods the
Service selects (all selected pods with ``publishNotReadyAddresses``), exactly
what cluster DNS returns for a headless Service. Pods with ``hostname`` and a
``subdomain`` naming the Service also get
``<hostname>.<svc>.<ns>.svc.cluster.local``.

Why not EndpointSlices: the API server rejects loopback endpoint addresses
(``may not be in the loopback range``), and pod addresses here are loopback,
so the vnode selects endpoints itself from the Services and pods it watches,
the way the endpoints controller would. Services with a ClusterIP resolve the
same way (to their endpoints): there is no kube-proxy, and a ClusterIP lies
outside loopback, so ports are not translated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lightkube.resources.core_v1 import Pod, Service

CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    hostname: str | None = None


@dataclass(frozen=True)
class _PodView:
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    ready: bool
    hostname: str | None
    subdomain: str | None


@dataclass(frozen=True)
class _SvcView:
    selector: tuple[tuple[str, str], ...]
    publish_not_ready: bool


@dataclass
class ServiceTable:
    """Services and pod addresses, reduced to (namespace, service) -> endpoints."""

    svcs: dict[tuple[str, str], _SvcView] = field(default_factory=dict)
    pods: dict[str, _PodView] = field(default_factory=dict)

    def update_service(self, op: str, svc: Service) -> bool:
        """Apply a Service watch event; True when name resolution may have changed."""
        meta = svc.metadata
        if meta is None or meta.name is None or meta.namespace is None:
            return False
        key = (meta.namespace, meta.name)
        selector = (svc.spec.selector or {}) if svc.spec is not None else {}
        if op == "DELETED" or not selector:
            return self.svcs.pop(key, None) is not None
        view = _SvcView(tuple(sorted(selector.items())),
                        bool(svc.spec and svc.spec.publishNotReadyAddresses))
        if self.svcs.get(key) == view:
            return False
        self.svcs[key] = view
        return True

    def update_pod(self, op: str, pod: Pod) -> bool:
        """Apply a Pod watch event; True when name resolution may have changed."""
        meta = pod.metadata
        if meta is None or meta.uid is None:
            return False
        ip = pod.status.podIP if pod.status is not None else None
        if op == "DELETED" or not ip or meta.deletionTimestamp is not None:
            return self.pods.pop(meta.uid, None) is not None
        conditions = (pod.status.conditions or []) if pod.status is not None else []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        view = _PodView(meta.namespace or "default", tuple(sorted((meta.labels or {}).items())),
                        ip, ready, pod.spec.hostname if pod.spec else None,
                        pod.spec.subdomain if pod.spec else None)
        if self.pods.get(meta.uid) == view:
            return False
        self.pods[meta.uid] = view
        return True

    def services(self) -> dict[tuple[str, str], list[Endpoint]]:
        by_ns: dict[str, list[_PodView]] = {}
        for p in self.pods.values():
            by_ns.setdefault(p.namespace, []).append(p)
        out: dict[tuple[str, str], list[Endpoint]] = {}
        for (ns, name), svc in self.svcs.items():
            eps = []
            for p in by_ns.get(ns, []):
                labels = dict(p.labels)
                if all(labels.get(k) == v for k, v in svc.selector) and (
                        p.ready or svc.publish_not_ready):
                    host = p.hostname if p.hostname and p.subdomain == name else None
                    eps.append(Endpoint(p.ip, host))
            if eps:
                out[(ns, name)] = sorted(eps, key=lambda e: (e.ip, e.hostname or ""))
        return out


def hosts_content(
    pod_name: str,
    namespace: str,
    pod_ip: str | None,
    services: Mapping[tuple[str, str], list[Endpoint]],
    hostname: str | None = None,
    subdomain: str | None = None,
) -> str:
    """The /etc/hosts of one pod, as the kubelet writes it plus service entries."""
    lines = [
        "# Kubernetes-managed hosts file (rayscale vnode).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if pod_ip:
        names = []
        host = hostname or pod_name
        if subdomain:
            names.append(f"{host}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}")
        names.append(host)
        lines.append(f"{pod_ip}\t{' '.join(names)}")
    lines.append("# services")
    for (ns, svc), endpoints in sorted(services.items()):
        base = f"{svc}.{ns}.svc.{CLUSTER_DOMAIN}"
        names = [base, f"{svc}.{ns}.svc", f"{svc}.{ns}"]
        if ns == namespace:
            names.append(svc)
        seen: set[str] = set()
        for ep in endpoints:
            if ep.ip in seen:
                continue
            seen.add(ep.ip)
            lines.append(f"{ep.ip}\t{' '.join(names)}")
        for ep in endpoints:
            if ep.hostname:
                lines.append(f"{ep.ip}\t{ep.hostname}.{base}")
    return "\n".join(lines) + "\n"


def resolv_content(namespace: str) -> str:
    """Search domains as in a pod; the only nameserver is loopback (nothing leaves 127/8)."""
    return (
        "nameserver 127.0.0.1\n"
        f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        "options ndots:5 timeout:1 attempts:1\n"
    )


def write_in_place(path: Path, content: str) -> bool:
    """Rewrite ``path`` keeping its inode (it is bind-mounted); True if it changed."""
    data = content.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        path.write_bytes(data)
        return True
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return True
