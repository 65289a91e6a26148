"""The dev control plane and the virtual node listen on loopback only.

etcd (client and peer URLs), kube-apiserver (--bind-address), kube-scheduler
and kube-controller-manager (their secure ports) are told 127.0.0.1; the vnode
serves only its kubelet API, on its Nodes' own loopback addresses. Listed from /proc, like the
local cluster's listeners (tests/e2e/test_listeners.py).
"""

from __future__ import annotations

from lightkube import Client
from lightkube.resources.core_v1 import Node

from rayscale.devcluster import DevCluster
from tests import netcheck
from tests.devtools import VNodeProcess


def test_control_plane_and_vnode_listen_on_loopback_only(
    dev_cluster: DevCluster, vnode: VNodeProcess, kube: Client
) -> None:
    state = dev_cluster.load_state()
    assert state is not None
    components = {name: netcheck.descendants([proc.pid]) for name, proc in state.procs.items()}
    found = {name: netcheck.listeners(pids) for name, pids in components.items()}
    found["vnode"] = netcheck.listeners(netcheck.descendants([vnode.proc.pid]))
    table = "\n".join(f"  {name}: {s}" for name, socks in found.items() for s in socks)
    assert all(found[c] for c in ("etcd", "kube-apiserver", "kube-scheduler",
                                  "kube-controller-manager")), table
    assert [s for socks in found.values() for s in socks if not s.loopback] == [], table
    ports = state.ports
    assert {s.port for s in found["kube-apiserver"]} == {ports.apiserver}, table
    assert {s.port for s in found["etcd"]} == {ports.etcd_client, ports.etcd_peer}, table
    # the vnode serves one thing, its kubelet API: on each of its Nodes' own loopback
    # addresses (never 127.0.0.1, never a wildcard), on the one port the Nodes publish
    nodes = [kube.get(Node, name) for name in vnode.node_names()]
    statuses = [n.status for n in nodes if n.status is not None]
    addresses = {a.address for st in statuses for a in (st.addresses or [])
                 if a.type == "InternalIP"}
    published = {st.daemonEndpoints.kubeletEndpoint.Port for st in statuses
                 if st.daemonEndpoints and st.daemonEndpoints.kubeletEndpoint}
    assert found["vnode"], table
    assert {s.ip for s in found["vnode"]} == addresses and "127.0.0.1" not in addresses, table
    assert {s.port for s in found["vnode"]} == published, table
