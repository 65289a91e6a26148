"""Service names for pods, without DNS: a per-pod ``/etc/hosts`` kept current.

Every pod process runs in its own mount namespace where the vnode has
bind-mounted a pod-specific hosts file over ``/etc/hosts`` (and a resolv.conf
naming only 127.0.0.1, so no lookup ever leaves loopback). The vnode rewrites
these files in place whenever EndpointSlices change, so
``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``, ``<svc>.<ns>`` and, from
the same namespace, ``<svc>`` resolve to the ready endpoint pods' addresses,
exactly what cluster DNS returns for a headless Service. Services with a
ClusterIP resolve the same way (to their endpoints): there is no kube-proxy,
and a ClusterIP lies outside loopback, so ports are not translated.
Endpoints with a hostname also get ``<hostname>.<svc>.<ns>.svc.cluster.local``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lightkube.resources.discovery_v1 import EndpointSlice

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    hostname: str | None = None


@dataclass
class ServiceTable:
    """(namespace, service) -> endpoint addresses, merged over a service's slices."""

    slices: dict[tuple[str, str], tuple[str, str, list[Endpoint]]] = field(default_factory=dict)

    def update(self, op: str, eps: EndpointSlice) -> bool:
        """Apply a watch event; True when the table changed."""
        meta = eps.metadata
        if meta is None or meta.name is None or meta.namespace is None:
            return False
        key = (meta.namespace, meta.name)
        if op == "DELETED":
            return self.slices.pop(key, None) is not None
        service = (meta.labels or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return self.slices.pop(key, None) is not None
        endpoints: list[Endpoint] = []
        if eps.addressType == "IPv4":
            for ep in eps.endpoints or []:
                ready = ep.conditions.ready if ep.conditions is not None else None
                if ready is False:
                    continue
                endpoints.extend(Endpoint(ip, ep.hostname) for ip in ep.addresses)
        entry = (meta.namespace, service, endpoints)
        if self.slices.get(key) == entry:
            return False
        self.slices[key] = entry
        return True

    def replace_all(self, items: Iterable[EndpointSlice]) -> bool:
        before = dict(self.slices)
        self.slices.clear()
        for eps in items:
            self.update("ADDED", eps)
        return before != self.slices

    def services(self) -> dict[tuple[str, str], list[Endpoint]]:
        out: dict[tuple[str, str], list[Endpoint]] = {}
        for ns, svc, endpoints in self.slices.values():
            out.setdefault((ns, svc), []).extend(endpoints)
        for eps in out.values():
            eps.sort(key=lambda e: (e.ip, e.hostname or ""))
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
