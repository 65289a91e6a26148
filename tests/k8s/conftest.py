"""A real Kubernetes control plane and a virtual node for the tests, always torn down.

Session-scoped: one dev cluster (etcd, kube-apiserver, kube-scheduler,
kube-controller-manager built from source by scripts/build-k8s.sh) and one
vnode process with two pools: ``regular`` (2 nodes, 4 CPU / 8 GiB) and
``elastic`` (1 virtual node, tainted ``virtual-kubelet.io/provider=rayscale``).
Each test gets its own namespace. Teardown stops the vnode (which stops its
pods' processes), sweeps any pod process left by marker, stops the control
plane by PID and fails if anything had to be swept.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.core_v1 import Namespace, Pod

from rayscale.devcluster import DevCluster, binaries, kueue_build
from rayscale.devcluster.kueue import DevKueue, KueueProc
from rayscale.vnode.config import Pool, Taint, VNodeConfig
from tests.devtools import VNodeProcess, start_vnode, wait_for

COLD_BUILD_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A cold build of the control plane runs inside the first test's setup: allow for it."""
    if binaries.missing() and binaries.can_build() is None:
        here = Path(__file__).parent
        for item in items:
            if here in Path(str(item.fspath)).parents:
                item.add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT_S))


ELASTIC_TAINT = Taint(key="virtual-kubelet.io/provider", value="rayscale", effect="NoSchedule")


def vnode_config() -> VNodeConfig:
    block = f"127.{random.randint(251, 254)}.{random.randint(0, 255)}.0/24"
    return VNodeConfig(
        name=f"t{uuid.uuid4().hex[:5]}",
        pod_cidr=block,
        pools=[
            Pool(name="regular", count=2, capacity={"cpu": "4", "memory": "8Gi"}),
            Pool(name="elastic", count=1, capacity={"cpu": "32", "memory": "64Gi"},
                 labels={"type": "virtual-kubelet"}, taints=[ELASTIC_TAINT]),
        ],
    )


@pytest.fixture(scope="session")
def k8s_bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if binaries.missing():
        reason = binaries.can_build()
        if reason:
            pytest.skip(f"Kubernetes binaries not built and cannot build: {reason}")
        binaries.ensure_built(tmp_path_factory.mktemp("build") / "build-k8s.log")
    return binaries.bin_dir()


@pytest.fixture(scope="session")
def dev_cluster(k8s_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[DevCluster]:
    cluster = DevCluster(tmp_path_factory.mktemp("devcluster"), name="rayscale-test",
                         bin_dir=k8s_bin_dir)
    try:
        cluster.start(timeout_s=180)
        yield cluster
    finally:
        cluster.stop()
    assert not any(cluster.running().values()), cluster.running()


@pytest.fixture(scope="session")
def kube(dev_cluster: DevCluster) -> Iterator[Client]:
    client = dev_cluster.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def vnode(dev_cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[VNodeProcess]:
    handle = start_vnode(dev_cluster.kubeconfig, tmp_path_factory.mktemp("vnode"),
                         vnode_config())
    try:
        yield handle
    finally:
        swept = handle.stop()
    assert not swept, f"pod processes survived the vnode: {swept}"


KUEUE_BUILD_TIMEOUT_S = 2400
RAY_CRDS = Path(__file__).parents[2] / "deploy" / "crds"


@pytest.fixture(scope="session")
def kueue_binary() -> Path:
    """Kueue's manager, built once per machine by scripts/build-kueue.sh (scripts/test.sh
    starts it before the tests; under a lock, so a build already running is waited for).
    Skips only when there is no Go toolchain to build it with."""
    if not kueue_build.built():
        reason = kueue_build.cannot_build()
        if reason:
            pytest.skip(f"Kueue not built and cannot build: {reason}")
        kueue_build.ensure_built(kueue_build.cache_root() / "build.log", KUEUE_BUILD_TIMEOUT_S)
    return kueue_build.binary()


@dataclass
class RunningKueue:
    kueue: DevKueue
    proc: KueueProc
    start_s: float  # CRDs applied, manager started, /readyz and webhooks answering


@pytest.fixture(scope="session")
def kueue(dev_cluster: DevCluster, kube: Client, kueue_binary: Path) -> Iterator[RunningKueue]:
    """Kueue on the session's dev cluster, after the RayJob/RayCluster CRDs (from
    deploy/crds, applied as the operator tests' ``crd`` fixture applies them). Stopped,
    webhook configurations deleted first, also when a test or the start fails."""
    for kind in ("rayclusters", "rayjobs"):
        doc = yaml.safe_load((RAY_CRDS / f"ray.io_{kind}.yaml").read_text())
        kube.apply(codecs.from_dict(doc), field_manager="rayscale-test", force=True)
    running = DevKueue(dev_cluster, binary=kueue_binary)
    t0 = time.monotonic()
    proc = running.start(kube, None, t0 + 180)  # stops what it started if it fails
    try:
        yield RunningKueue(running, proc, time.monotonic() - t0)
    finally:
        running.stop(kube, proc)
    assert not DevKueue.alive(proc), f"Kueue (pid {proc.pid}) still runs"
    names = [h.metadata.name for h in kube.list(MutatingWebhookConfiguration) if h.metadata]
    names += [h.metadata.name for h in kube.list(ValidatingWebhookConfiguration) if h.metadata]
    left = [n for n in names if n and n.startswith("rayscale-kueue")]
    assert not left, f"Kueue's webhook configurations left behind: {left}"


@pytest.fixture
def namespace(kube: Client, vnode: VNodeProcess) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace.from_dict({"metadata": {"name": name}}))  # type: ignore[arg-type]
    try:
        yield name
    finally:
        # delete pods first so the vnode stops their processes, then the namespace
        for pod in kube.list(Pod, namespace=name):
            assert pod.metadata is not None and pod.metadata.name is not None
            with contextlib.suppress(ApiError):
                kube.delete(Pod, pod.metadata.name, namespace=name, grace_period=1)
        wait_for(lambda: not list(kube.list(Pod, namespace=name)), 60,
                 f"pods of {name} gone")
        kube.delete(Namespace, name)
