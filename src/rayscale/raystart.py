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
from pathlib import Path
from typing import Any

from rayscale.api.ray_start_options import RAY_START_OPTIONS

# Params whose value rayscale decides (placement, addresses, lifecycle) or
# derives from the group's resources; a user's value for them is not passed on.
# ("labels" is refused when a spec is read, as KubeRay v1.7 refuses it: a group's
# labels are its top-level `labels`, which reach `RayStart.labels`.)
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
    #: The node's Ray labels (``--labels``): its group's ``labels`` and rayscale's own.
    labels: Mapping[str, str] = field(default_factory=dict)
    # rayscale's own settings (ports, dashboard host); these win over the user's
    overrides: Mapping[str, str] = field(default_factory=dict)
    block: bool = True


#: Ray's GCS asks every raylet for its pending demand once a second by default, so
#: new demand reached the autoscaler 0-1 s late. Five times a second it arrives within
#: 0.2 s, for a little GCS and raylet CPU (bench/reaction.py measures both). Set in the
#: head's environment (local mode, and a Kubernetes head with rayscale's autoscaler),
#: unless the user's own environment sets it.
DEMAND_PULL_ENV = "RAY_gcs_pull_resource_loads_period_milliseconds"
DEMAND_PULL_MS = "200"


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
        argv.append(labels_flag(start.labels))
    user = {
        k: v for k, v in params.items()
        if k not in RESOURCE_PARAMS and k not in MANAGED_PARAMS and k not in start.overrides
    }
    for key, value in [*sorted(user.items()), *sorted(start.overrides.items())]:
        flag = _flag(key, value)
        if flag is not None:
            argv.append(flag)
    if start.block:
        argv.append("--block")
    return argv


def node_labels(group_labels: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """A node's Ray labels: its group's ``labels`` and rayscale's ``own`` (which win;
    the spec refuses a group that sets them)."""
    return {**group_labels, **own}


def labels_flag(labels: Mapping[str, str]) -> str:
    """``--labels=k=v,...``, sorted by key: the same labels always give the same argument.

    Ray 2.60 parses this ``key=value`` form with Kubernetes label syntax (which the
    spec's ``labels`` already follow, so no key or value holds ``,`` or ``=``), and
    accepts keys with the ``ray.io/`` prefix (``ray.io/market-type``) in it; only
    its deprecated JSON form refuses them.
    """
    return "--labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


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


def _flag(key: str, value: str) -> str | None:
    """One ``--key=value``; a flag (``--block``) for "true", nothing for "false".

    The params were validated against ``ray start``'s options (the models'
    ``check_ray_start_params``); the name check here guards the argument list.
    """
    if not _PARAM_NAME.match(key):
        raise ValueError(f"rayStartParams.{key}: not a valid ray start option name")
    if RAY_START_OPTIONS.get(key) == "flag":  # KubeRay writes flags as "true"
        return f"--{key}" if value.strip().lower() == "true" else None
    return f"--{key}={value}"


# ------------------------------------------- ray start's options, from the installed Ray

OPTIONS_MODULE = Path(__file__).parent / "api" / "ray_start_options.py"


def installed_ray_start_options() -> dict[str, str]:
    """``ray start``'s long options in the installed Ray, by name, with their kind:
    ``flag``, ``bool``, ``int``, ``float``, ``str`` or ``choice:a|b|c``."""
    import click
    from ray.scripts.scripts import start

    options: dict[str, str] = {}
    for param in start.params:
        if not isinstance(param, click.Option):
            continue
        kind = _kind(param)
        for opt in param.opts:
            if opt.startswith("--"):
                options[opt[2:]] = kind
    return dict(sorted(options.items()))


def _kind(param: Any) -> str:
    import click

    if param.is_flag:
        return "flag"
    kind = param.type
    if isinstance(kind, click.Choice):
        return "choice:" + "|".join(str(c) for c in kind.choices)
    if isinstance(kind, click.types.BoolParamType):
        return "bool"
    if isinstance(kind, click.types.IntParamType):  # IntRange too
        return "int"
    if isinstance(kind, click.types.FloatParamType):
        return "float"
    return "str"


def options_module_text() -> str:
    """The text of ``rayscale/api/ray_start_options.py`` for the installed Ray."""
    import ray

    lines = [
        f'"""``ray start``\'s options in Ray {ray.__version__}: generated, do not edit.',
        "",
        "Regenerate with ``python -m rayscale.raystart`` after changing Ray's version;",
        "tests/test_raystart.py fails while this differs from the installed Ray.",
        '"""',
        "",
        f'RAY_VERSION = "{ray.__version__}"',
        "",
        "RAY_START_OPTIONS: dict[str, str] = {",
        *(f'    "{name}": "{kind}",' for name, kind in installed_ray_start_options().items()),
        "}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    OPTIONS_MODULE.write_text(options_module_text())
    print(f"wrote {OPTIONS_MODULE}")
