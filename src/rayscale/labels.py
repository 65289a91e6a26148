"""Label keys, reserved names and limits shared by every part of rayscale.

One place for the strings KubeRay, Ray and rayscale agree on, so that no two
modules spell them differently.
"""

from __future__ import annotations

from typing import Final

# --- KubeRay's labels on the pods and services it (and our operator) creates
CLUSTER_LABEL: Final = "ray.io/cluster"
NODE_TYPE_LABEL: Final = "ray.io/node-type"  # "head" or "worker"
GROUP_LABEL_K8S: Final = "ray.io/group"
IS_RAY_NODE_LABEL: Final = "ray.io/is-ray-node"
NODE_TYPE_HEAD: Final = "head"
NODE_TYPE_WORKER: Final = "worker"
#: The KubeRay custom resource a RayCluster (and its Services) comes from: its kind
#: (``RayJob``, ``RayService``) and its name.
ORIGIN_CRD_LABEL: Final = "ray.io/originated-from-crd"
ORIGIN_NAME_LABEL: Final = "ray.io/originated-from-cr-name"
#: On the pods of a RayService's cluster: ``"true"`` when the pod's Serve proxy may take
#: traffic (the serve Service selects on it); KubeRay's ``RayClusterServingServiceLabelKey``.
SERVE_LABEL: Final = "ray.io/serve"

# --- labels Ray itself gives every node
#: The node's group: Ray sets it from ``RAY_NODE_TYPE_NAME``, which every node gets.
RAY_NODE_GROUP_LABEL: Final = "ray.io/node-group"
#: The node's Ray id; Ray's raylet aborts if ``ray start --labels`` sets it.
RAY_NODE_ID_LABEL: Final = "ray.io/node-id"

# --- rayscale's labels on Ray nodes (``ray start --labels``) and virtual nodes
NODE_LABEL: Final = "rayscale.io/node"
GROUP_LABEL: Final = "rayscale.io/group"
POOL_LABEL: Final = "rayscale.io/pool"
VNODE_LABEL: Final = "rayscale.io/vnode"

# --- group names
#: The head's group: Ray's KubeRay autoscaler names the head node type so, and
#: no worker group may take it.
HEAD_GROUP: Final = "headgroup"
#: Ray nodes no provider of ours started (another tool's, or an older rayscale's).
EXTERNAL_GROUP: Final = "external"

# --- KubeRay's default head ports (named container ports of the Ray head)
DEFAULT_HEAD_PORTS: Final = {
    "gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080, "serve": 8000,
}

# --- rayscale's autoscaler sidecar in the head pod: its /metrics, on the port KubeRay's
# PodMonitor (config/prometheus/podMonitor.yaml) scrapes for the autoscaler by name
AUTOSCALER_METRICS_PORT_NAME: Final = "as-metrics"
AUTOSCALER_METRICS_PORT: Final = 44217

# --- the API group
RAY_API_GROUP: Final = "ray.io"
RAY_API_VERSION: Final = "ray.io/v1"

#: KubeRay's default ``maxReplicas`` (int32 max), the one spelling of "no upper
#: bound" in a spec. The planner's state says the same with ``max: null``.
UNBOUNDED_REPLICAS: Final = 2_147_483_647
