"""A KubeRay RayService file in local mode: `rayscale up SERVICE.yaml`.

The cluster is ``spec.rayClusterConfig`` under the RayService's name,
started exactly as ``rayscale up`` starts a RayCluster (token auth,
autoscaler); then ``spec.serveConfigV2`` is applied to it
(:func:`rayscale.local.serve.deploy`) and ``up`` waits until its
applications run and Serve's proxy routes them.

``up`` of a RayService whose cluster already runs with the same
``rayClusterConfig`` applies ``serveConfigV2`` in place (KubeRay's in-place
update). A changed ``rayClusterConfig`` is refused: local mode has no
zero-downtime cluster upgrade (KubeRay's ``upgradeStrategy: NewCluster``);
``upgradeStrategy``, ``serveService``, ``excludeHeadPodFromServeSvc`` and
``rayClusterDeletionDelaySeconds`` are Kubernetes matters, accepted and not
acted on.

Everything that can be checked without a cluster is checked before one starts
(the file, the Serve config against local mode's rules and Ray Serve's schema,
local code paths): a bad file starts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from rayscale.local.cluster import ClusterError, is_running, up_spec
from rayscale.local.serve import DeployResult, deploy, preflight
from rayscale.local.store import ClusterDir, ClusterRecord
from rayscale.spec import load_cluster_spec
from rayscale.spec.service import ServiceSpec

#: RayService fields that only mean something on Kubernetes.
KUBERNETES_ONLY = ("upgradeStrategy", "serveService", "excludeHeadPodFromServeSvc",
                   "rayClusterDeletionDelaySeconds")


def kubernetes_only_fields(spec: ServiceSpec) -> list[str]:
    """The Kubernetes-only fields the file sets (``up`` names them: not acted on here)."""
    manifest = spec.service.spec.to_manifest()
    return [name for name in KUBERNETES_ONLY if name in manifest]


def up_service(
    spec: ServiceSpec,
    source: Path,
    wait_s: float = 180.0,
    serve_wait_s: float = 300.0,
    progress: Callable[[str], None] = lambda _: None,
    no_auth: bool = False,
    ha: bool = False,
) -> tuple[ClusterRecord, DeployResult]:
    """Start the service's cluster (or find it running, unchanged), then apply its Serve
    config. ClusterError: the cluster could not start or differs; SpecError: the
    config cannot run here; ServeError: Serve refused it or did not settle in time."""
    base_dir = source.resolve().parent
    preflight(spec.serve, base_dir)
    cluster = ClusterDir(spec.name)
    if is_running(cluster):
        running = load_cluster_spec(cluster.spec_copy)
        if running.spec != spec.cluster.spec:
            raise ClusterError(
                f"cluster {spec.name!r} runs with another rayClusterConfig, and local mode "
                f"has no cluster upgrade (KubeRay's NewCluster): `rayscale down {spec.name}` "
                f"and `rayscale up` the file again; a change to serveConfigV2 alone is "
                f"applied in place")
        progress(f"cluster {spec.name} runs with this rayClusterConfig: "
                 f"applying serveConfigV2 in place")
    else:
        manifest = yaml.safe_dump(spec.cluster.to_manifest(), sort_keys=False).encode()
        record = up_spec(spec.cluster, manifest, source, wait_s=wait_s, progress=progress,
                         no_auth=no_auth, ha=ha)
        progress(f"cluster {spec.name} is up: dashboard {record.dashboard_url}")
    result = deploy(cluster, spec.serve, base_dir, str(source.resolve()),
                    wait_s=serve_wait_s, progress=progress)
    return cluster.load(), result
