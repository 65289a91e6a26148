"""Node providers for Ray's own autoscaler (benchmark only), on loopback addresses.

Ray's autoscaler v2 runs in the head's monitor process and loads this class
(``provider: {type: external, module: ray_own_provider.LoopbackNodeProvider}``)
from ``PYTHONPATH``. It starts worker nodes the way rayscale's local provider
does (a ``ray start --block`` process group per node, each on its own
127.x address and temp dir, ``RAY_CLOUD_INSTANCE_ID`` naming it), so that a
benchmark compares the two autoscalers and nothing else. Ray installs
nothing (``disable_node_updaters``): the process is the node.

Provider config keys: ``gcs_address``, ``ip_prefix`` (``127.S.1.``),
``temp_root``, ``head_instance_id``, ``head_ip``, ``marker`` (the value of
``RAYSCALE_CLUSTER_ID`` every process carries, for cleanup), ``node_memory``.

``LoopbackFakeMultiNodeProvider`` is Ray's own fake multi-node provider (the one
Ray's autoscaler tests use) with one change: its nodes get their own loopback
address (``ip_prefix`` + n) where Ray's would bind this machine's outward one.
It starts each node inside the autoscaler's process (``ray._private.node.Node``),
one after the other. Needs ``RAY_FAKE_CLUSTER=1`` on the head.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import ray._private.node
import ray._private.parameter
from ray._private import ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

HEAD_TYPE = "head"


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class LoopbackNodeProvider(NodeProvider):  # type: ignore[misc]
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self.lock = threading.RLock()
        cfg = provider_config
        head = cfg["head_instance_id"]
        self.nodes: dict[str, dict[str, Any]] = {head: {
            "ip": cfg["head_ip"], "proc": None,
            "tags": {TAG_RAY_NODE_KIND: NODE_KIND_HEAD, TAG_RAY_USER_NODE_TYPE: HEAD_TYPE,
                     TAG_RAY_NODE_NAME: head, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE},
        }}
        self.next = 0

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        with self.lock:
            return [i for i, n in self.nodes.items()
                    if all(n["tags"].get(k) == v for k, v in tag_filters.items())
                    and (n["proc"] is None or n["proc"].poll() is None)]

    def is_running(self, node_id: str) -> bool:
        with self.lock:
            return node_id in self.nodes

    def is_terminated(self, node_id: str) -> bool:
        return not self.is_running(node_id)

    def node_tags(self, node_id: str) -> dict[str, str]:
        with self.lock:
            return dict(self.nodes[node_id]["tags"])

    def internal_ip(self, node_id: str) -> str:
        with self.lock:
            return str(self.nodes[node_id]["ip"])

    external_ip = internal_ip

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            self.nodes[node_id]["tags"].update(tags)

    def create_node_with_resources_and_labels(
        self, node_config: dict[str, Any], tags: dict[str, str], count: int,
        resources: dict[str, float], labels: dict[str, str],
    ) -> None:
        for _ in range(count):
            self._start(tags, resources)

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> None:
        raise NotImplementedError("resources are needed: create_node_with_resources_and_labels")

    def _start(self, tags: dict[str, str], resources: dict[str, float]) -> None:
        cfg = self.provider_config
        with self.lock:
            self.next += 1
            index = self.next
        node_type = tags[TAG_RAY_USER_NODE_TYPE]
        node_id = f"{node_type}-{index}"
        ip = f"{cfg['ip_prefix']}{1 + index}"
        temp = Path(cfg["temp_root"]) / f"w{index}"
        temp.mkdir(parents=True, exist_ok=True)
        argv = [
            str(Path(sys.executable).with_name("ray")), "start", "--block",
            f"--address={cfg['gcs_address']}", f"--node-ip-address={ip}",
            f"--num-cpus={int(resources.get('CPU', 0))}",
            f"--memory={int(resources.get('memory', cfg['node_memory']))}",
            f"--object-store-memory={256 * 1024 * 1024}", f"--temp-dir={temp}",
            "--dashboard-agent-listen-port=0", f"--metrics-export-port={_free_port(ip)}",
            "--disable-usage-stats",
        ]
        env = {**os.environ, "RAY_CLOUD_INSTANCE_ID": node_id, "RAY_NODE_TYPE_NAME": node_type,
               "RAYSCALE_CLUSTER_ID": cfg["marker"]}
        log = open(temp.parent / f"{node_id}.log", "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
        with self.lock:
            self.nodes[node_id] = {
                "ip": ip, "proc": proc,
                "tags": {**tags, TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                         TAG_RAY_USER_NODE_TYPE: node_type, TAG_RAY_NODE_NAME: node_id,
                         TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE},
            }

    def terminate_node(self, node_id: str) -> None:
        with self.lock:
            node = self.nodes.pop(node_id, None)
        if node is None or node["proc"] is None:
            return
        proc: subprocess.Popen[bytes] = node["proc"]
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    @staticmethod
    def bootstrap_config(cluster_config: dict[str, Any]) -> dict[str, Any]:
        return cluster_config


class LoopbackFakeMultiNodeProvider(FakeMultiNodeProvider):  # type: ignore[misc]
    """Ray's ``FakeMultiNodeProvider``, its nodes on ``ip_prefix`` + n instead of the outward IP.

    The creation is Ray's (``_create_node_with_resources_and_labels`` in
    ``ray/autoscaler/_private/fake_multi_node/node_provider.py``, Ray 2.60) with
    ``node_ip_address`` set, ``memory`` passed as memory (Ray's passes it on as a
    custom resource, which ``RayParams`` refuses), a 256 MiB object store (like
    the other provider's nodes) and the metrics port picked on the node's address.
    Everything else (ids ``ffff...n``, in-process start, termination) is Ray's.
    """

    def _create_node_with_resources_and_labels(
        self, node_config: dict[str, Any], tags: dict[str, str], count: int,
        resources: dict[str, float], labels: dict[str, str],
    ) -> None:
        resources = dict(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            next_id = self._next_hex_node_id()
            ip = f"{self.provider_config['ip_prefix']}{1 + self._next_node_id}"
            ray_params = ray._private.parameter.RayParams(
                node_ip_address=ip,
                min_worker_port=0,
                max_worker_port=0,
                dashboard_port=None,
                dashboard_agent_listen_port=0,
                metrics_export_port=_free_port(ip),
                num_cpus=resources.pop("CPU", 0),
                num_gpus=resources.pop("GPU", 0),
                memory=resources.pop("memory", None),
                object_store_memory=resources.pop("object_store_memory", 256 * 1024 * 1024),
                resources=resources,
                labels=labels,
                redis_address=self._gcs_address,
                gcs_address=self._gcs_address,
                env_vars={
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": next_id,
                    "RAY_CLOUD_INSTANCE_ID": next_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                },
            )
            node = ray._private.node.Node(
                ray_params, head=False, shutdown_at_exit=False, spawn_reaper=False
            )
            self._nodes[next_id] = {
                "tags": {
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                    TAG_RAY_USER_NODE_TYPE: node_type,
                    TAG_RAY_NODE_NAME: next_id,
                    TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                    **tags,
                },
                "node": node,
            }
