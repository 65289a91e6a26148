"""A virtual node: a kubelet stand-in that runs pods as local processes.

In the spirit of virtual-kubelet: it registers Node objects (pools with
capacity, labels and taints), keeps their Leases and Ready conditions fresh,
and runs the pods the real kube-scheduler binds to them as processes on this
machine, each pod on its own loopback address, with service names resolved
through a per-pod hosts file. ``fake_run`` reports pods Running without
starting anything (for operator benchmarks). See docs/dev-cluster.md.
"""

from rayscale.vnode.config import Pool, Taint, VNodeConfig, load_config

__all__ = ["Pool", "Taint", "VNodeConfig", "load_config"]
