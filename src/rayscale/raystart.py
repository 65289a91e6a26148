"""The one place that builds a ``ray start`` command line, as an argument list.

rayStartParams are user input: each becomes one ``--key=value`` argument,
never part of a shell string. Resources come from the spec's single
resource derivation (:func:`rayscale.spec.ray_resources`), so the resource
flags here always agree with what the planner believes a node holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Params whose value rayscale decides (placement, addresses, lifecycle) or
# derives from the group's resources; a user's value for them is not passed on.
RESOURCE_PARAMS = frozenset({"num-cpus", "num-gpus", "memory", "object-store-memory", "resources"})
MANAGED_PARAMS = frozenset(
    {"address", "head", "block", "node-ip-address", "temp-dir", "labels", "port"}
)
_PARAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")



@dataclass(frozen=True)
class RayStart:
    """What a ``ray start`` needs beyond the user's params."""

    node_ip: str
    resources: Mapping[str, float]
    address: str | None = None  # None: a head node
    gcs_port: int | None = None  # head only
    temp_dir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # rayscale's own settings (ports, dashboard host); these win over the user's
    overrides: Mapping[str, str] = field(default_factory=dict)
    block: bool = True


def ray_start_argv(ray_bin: str, params: Mapping[str, str], start: RayStart) -> list[str]:
    """``[ray_bin, "start", ...]`` for one node."""
    argv = [ray_bin, "start"]
    if start.address is None:
        argv.append("--head")
        if start.gcs_port is not None:
            argv.append(f"--port={start.gcs_port}")
    else:
        argv.append(f"--address={start.address}")
    argv.append(f"--node-ip-address={start.node_ip}")
    if start.temp_dir:
        argv.append(f"--temp-dir={start.temp_dir}")
    argv += resource_flags(start.resources)
    if start.labels:
        argv.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(start.labels.items())))
    user = {
        k: v for k, v in params.items()
        if k not in RESOURCE_PARAMS and k not in MANAGED_PARAMS and k not in start.overrides
    }
    for key, value in [*sorted(user.items()), *sorted(start.overrides.items())]:
        argv.append(_flag(key, value))
    if start.block:
        argv.append("--block")
    return argv


def resource_flags(resources: Mapping[str, float]) -> list[str]:
    """``--num-cpus`` / ``--num-gpus`` / ``--memory`` / ``--resources`` for a node."""
    flags = []
    custom: dict[str, float] = {}
    for name, amount in sorted(resources.items()):
        if name == "CPU":
            flags.append(f"--num-cpus={_whole(amount)}")
        elif name == "GPU":
            flags.append(f"--num-gpus={_whole(amount)}")
        elif name == "memory":
            flags.append(f"--memory={_whole(amount)}")
        elif name == "object_store_memory":
            flags.append(f"--object-store-memory={_whole(amount)}")
        else:
            custom[name] = amount
    if custom:
        flags.append("--resources=" + json.dumps(custom, sort_keys=True))
    return flags


def _whole(amount: float) -> int:
    return round(amount)


def _flag(key: str, value: str) -> str:
    if not _PARAM_NAME.match(key):
        raise ValueError(f"rayStartParams.{key}: not a valid ray start option name")
    # KubeRay writes boolean flags as "true" (e.g. `block: "true"`)
    if value.lower() == "true" and key in _BOOLEAN_FLAGS:
        return f"--{key}"
    return f"--{key}={value}"


_BOOLEAN_FLAGS = frozenset({"disable-usage-stats", "no-monitor", "ray-debugger-external"})
