"""`rayscale dev-cluster up --with-operator` / `down`, as a user runs them (subprocesses).

A second control plane of its own (its own RAYSCALE_HOME and --name): after
``up`` the API answers, the vnode's three Nodes are Ready (the elastic one
labelled and tainted as a virtual-kubelet node), the CRDs are established and
the operator runs; a second ``up`` keeps every process; ``status`` lists each
part; after ``down`` no process of it is left, checked by the PIDs recorded
at ``up``. Always torn down, also when an assertion fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Node

from rayscale import procs
from rayscale.devcluster import DevCluster, admin_client
from rayscale.devcluster.stack import DevStack, StackState

NAME = "t-stack"


def _cli(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAYSCALE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "rayscale.cli.main", "dev-cluster", *args,
                           "--name", NAME], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _pids(home: Path) -> dict[str, int]:
    """Every process of the stack, by part: the control plane's and the stack's records."""
    state_dir = home / "devcluster" / NAME
    cluster = DevCluster(state_dir).load_state()
    out = {comp: proc.pid for comp, proc in (cluster.procs.items() if cluster else [])}
    stack = StackState.model_validate_json((state_dir / "stack.json").read_text())
    for part in ("vnode", "operator"):
        proc = getattr(stack, part)
        if proc is not None:
            out[part] = proc.pid
    return out


def test_up_with_operator_then_down(k8s_bin_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    seen: dict[str, int] = {}
    try:
        up = _cli(home, "up", "--with-operator")
        assert up.returncode == 0, up.stdout + up.stderr
        exports = [line for line in up.stdout.splitlines() if line.startswith("export KUBECONFIG=")]
        kubeconfig = Path(exports[0].split("=", 1)[1])
        assert f'export PATH="{k8s_bin_dir}:$PATH"' in up.stdout
        seen = _pids(home)
        assert set(seen) == {"etcd", "kube-apiserver", "kube-controller-manager",
                             "kube-scheduler", "vnode", "operator"}
        assert "operator" in procs.cmdline(seen["operator"])

        client = admin_client(kubeconfig)
        try:
            nodes = {n.metadata.name: n for n in client.list(Node)
                     if n.metadata and n.metadata.name}
            assert sorted(nodes) == ["rayscale-elastic-0", "rayscale-regular-0",
                                     "rayscale-regular-1"]
            for node in nodes.values():
                assert node.status and any(c.type == "Ready" and c.status == "True"
                                           for c in node.status.conditions or [])
            elastic = nodes["rayscale-elastic-0"]
            assert elastic.metadata and elastic.metadata.labels
            assert elastic.metadata.labels["type"] == "virtual-kubelet"
            assert elastic.spec and [t.key for t in elastic.spec.taints or []] == [
                "virtual-kubelet.io/provider"]
            for name in ("rayclusters.ray.io", "rayjobs.ray.io", "raycronjobs.ray.io"):
                crd = client.get(CustomResourceDefinition, name)
                assert crd.status and any(c.type == "Established" and c.status == "True"
                                          for c in crd.status.conditions or [])
        finally:
            client.close()

        again = _cli(home, "up", "--with-operator")  # idempotent: nothing restarted
        assert again.returncode == 0, again.stdout + again.stderr
        assert _pids(home) == seen

        status = _cli(home, "status")
        assert status.returncode == 0
        for line in ("vnode                      running", "operator                   running",
                     "nodes ready                3/3", "crds established           4/4"):
            assert line in status.stdout, status.stdout

        down = _cli(home, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "outlived" not in down.stderr
        # alive and still ours (a reused PID would not name this home on its command line)
        left = {part: pid for part, pid in seen.items()
                if procs.is_alive(pid) and any(str(home) in a for a in procs.cmdline(pid))}
        assert not left, f"still running after down: {left}"
        status = _cli(home, "status")
        assert "running" not in status.stdout, status.stdout
    finally:
        # whatever up started, also when it or an assertion failed: by the records
        DevStack(DevCluster(home / "devcluster" / NAME)).down()
