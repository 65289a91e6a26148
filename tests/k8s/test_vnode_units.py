"""Pure parts of the vnode (no cluster needed): config, addresses, hosts files, $(VAR)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rayscale.vnode.config import VNodeConfig
from rayscale.vnode.hosts import Endpoint, hosts_content, resolv_content
from rayscale.vnode.runtime import expand
from rayscale.vnode.server import IpPool


def test_default_pools() -> None:
    cfg = VNodeConfig()
    names = [n for n, _ in cfg.node_names()]
    assert names == ["rayscale-regular-0", "rayscale-regular-1", "rayscale-elastic-0"]
    elastic = cfg.pools[1]
    assert elastic.labels == {"type": "virtual-kubelet"}
    assert elastic.taints[0].key == "virtual-kubelet.io/provider"
    assert cfg.pools[0].capacity == {"pods": "110", "cpu": "4", "memory": "8Gi"}


def test_pod_cidr_must_be_loopback() -> None:
    with pytest.raises(ValidationError):
        VNodeConfig(pod_cidr="10.0.0.0/16")
    assert VNodeConfig(pod_cidr="127.251.3.0/24").pod_cidr == "127.251.3.0/24"


def test_ip_pool_never_hands_out_127_0_0_1_and_does_not_reuse_at_once() -> None:
    pool = IpPool("127.0.0.0/29")
    got = [pool.allocate() for _ in range(5)]
    assert "127.0.0.1" not in got and "127.0.0.0" not in got
    assert len(set(got)) == 5
    pool.release(got[0])
    assert pool.allocate() == "127.0.0.7"  # the next fresh one first
    assert pool.allocate() == got[0]  # a freed one only once the others are used
    with pytest.raises(RuntimeError):
        pool.allocate()
    assert pool.claim("127.9.9.9") is None


def test_hosts_file_names() -> None:
    services = {
        ("ns1", "head-svc"): [Endpoint("127.250.0.5", "head")],
        ("ns2", "other"): [Endpoint("127.250.0.6")],
    }
    text = hosts_content("worker-0", "ns1", "127.250.0.7", services)
    lines = text.splitlines()
    assert "127.250.0.7\tworker-0" in lines
    assert ("127.250.0.5\thead-svc.ns1.svc.cluster.local head-svc.ns1.svc head-svc.ns1 head-svc"
            in lines)
    assert "127.250.0.5\thead.head-svc.ns1.svc.cluster.local" in lines
    # another namespace's service: no short name
    assert "127.250.0.6\tother.ns2.svc.cluster.local other.ns2.svc other.ns2" in lines
    assert "nameserver 127.0.0.1" in resolv_content("ns1")


def test_var_expansion() -> None:
    env = {"A": "1", "B": "x"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-x-$(C)-$(A)"


def test_service_table_selects_ready_pods() -> None:
    from typing import Any, cast

    from lightkube.resources.core_v1 import Pod, Service

    from rayscale.vnode.hosts import ServiceTable

    def pod(name: str, ip: str, ready: bool, labels: dict[str, str], **spec: Any) -> Pod:
        return cast(Pod, Pod.from_dict({
            "metadata": {"name": name, "namespace": "ns", "uid": name, "labels": labels},
            "spec": {"containers": [{"name": "c"}], **spec},
            "status": {"podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]},
        }))

    def svc(name: str, publish: bool = False) -> Service:
        return cast(Service, Service.from_dict({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"selector": {"app": "a"}, "publishNotReadyAddresses": publish},
        }))

    table = ServiceTable()
    assert table.update_service("ADDED", svc("s"))
    assert table.update_service("ADDED", svc("all", publish=True))
    assert table.update_pod("ADDED", pod("p1", "127.9.0.2", True, {"app": "a"},
                                         hostname="h1", subdomain="s"))
    assert table.update_pod("ADDED", pod("p2", "127.9.0.3", False, {"app": "a"}))
    assert table.update_pod("ADDED", pod("p3", "127.9.0.4", True, {"app": "b"}))
    assert not table.update_pod("MODIFIED", pod("p3", "127.9.0.4", True, {"app": "b"}))
    got = table.services()
    assert got[("ns", "s")] == [Endpoint("127.9.0.2", "h1")]
    assert [e.ip for e in got[("ns", "all")]] == ["127.9.0.2", "127.9.0.3"]
    assert table.update_pod("DELETED", pod("p1", "127.9.0.2", True, {"app": "a"}))
    assert ("ns", "s") not in table.services()
