"""A real Kubernetes control plane for development and tests (no Docker, no downloads).

etcd, kube-apiserver, kube-scheduler and kube-controller-manager are built
from source (``scripts/build-k8s.sh``) and run as local processes on
127.0.0.1; :mod:`rayscale.vnode` supplies the Nodes and runs the pods.
See docs/dev-cluster.md.
"""

from rayscale.devcluster.cluster import DevCluster, admin_client, default_state_dir

__all__ = ["DevCluster", "admin_client", "default_state_dir"]
