"""Configuration of a virtual node process: which Nodes it registers and how it runs pods.

One vnode process serves one or more *pools*; a pool is ``count`` identical
Nodes (``<name>-<pool>-<i>``) with a capacity, labels and taints. The default
is what the Ray-on-Kubernetes tests need: two ``regular`` nodes of 4 CPU /
8 GiB and one ``elastic`` virtual node marked the way serverless nodes are
(``type=virtual-kubelet`` label, ``virtual-kubelet.io/provider=rayscale:NoSchedule``
taint), so only pods that tolerate it land there.

YAML form (all keys optional; see docs/dev-cluster.md)::

    name: rayscale
    pod_cidr: 127.250.0.0/16
    fake_run: false
    pools:
      - name: regular
        count: 2
        capacity: {cpu: "4", memory: 8Gi, pods: "110"}
        labels: {rayscale.io/pool: regular}
      - name: elastic
        count: 1
        capacity: {cpu: "64", memory: 256Gi, pods: "500"}
        labels: {type: virtual-kubelet}
        taints:
          - {key: virtual-kubelet.io/provider, value: rayscale, effect: NoSchedule}
    images:                  # images it runs, before the defaults (rayscale.vnode.images)
      - {image: registry.example.com/team/ray-custom, cmd: [bash]}
    default_images: true     # also rayproject/ray, rayscale, python, busybox, redis
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rayscale.vnode.images import ImageProgram, default_images


class Taint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    count: int = Field(default=1, ge=0)
    capacity: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "4", "memory": "8Gi", "pods": "110"}
    )
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)

    @field_validator("capacity")
    @classmethod
    def _pods_default(cls, value: dict[str, str]) -> dict[str, str]:
        return {"pods": "110", **value}


def default_pools() -> list[Pool]:
    return [
        Pool(name="regular", count=2, capacity={"cpu": "4", "memory": "8Gi", "pods": "110"}),
        Pool(
            name="elastic",
            count=1,
            capacity={"cpu": "64", "memory": "256Gi", "pods": "500"},
            labels={"type": "virtual-kubelet"},
            taints=[Taint(key="virtual-kubelet.io/provider", value="rayscale",
                          effect="NoSchedule")],
        ),
    ]


class VNodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "rayscale"  # Node names are <name>-<pool>-<index>
    pools: list[Pool] = Field(default_factory=default_pools)
    # loopback block pod addresses come from; never includes 127.0.0.1
    pod_cidr: str = "127.250.0.0/16"
    # report pods Running without starting any process (operator benchmarks)
    fake_run: bool = False
    lease_seconds: int = 40
    renew_interval_s: float = 10.0
    status_interval_s: float = 30.0
    delete_nodes_on_exit: bool = True
    # images the vnode runs (first match wins), looked up before the defaults
    images: list[ImageProgram] = Field(default_factory=list)
    # also the default map (rayproject/ray, rayscale, python, busybox, redis)
    default_images: bool = True

    @field_validator("pod_cidr")
    @classmethod
    def _loopback(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=False)
        if not net.subnet_of(ipaddress.ip_network("127.0.0.0/8")):  # type: ignore[arg-type]
            raise ValueError(f"pod_cidr {value} must be inside 127.0.0.0/8")
        if net.num_addresses < 4:
            raise ValueError(f"pod_cidr {value} is too small")
        return str(net)

    def image_map(self) -> list[ImageProgram]:
        """The images this vnode runs: the configured ones, then the defaults."""
        return [*self.images, *(default_images() if self.default_images else [])]

    def node_names(self) -> list[tuple[str, Pool]]:
        return [(f"{self.name}-{p.name}-{i}", p) for p in self.pools for i in range(p.count)]


def load_config(path: Path | None) -> VNodeConfig:
    if path is None:
        return VNodeConfig()
    data = yaml.safe_load(path.read_text()) or {}
    return VNodeConfig.model_validate(data)
