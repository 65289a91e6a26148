"""The one place that turns a group spec into the Ray resources of its nodes.

Sources, highest priority first, for each of CPU, GPU and memory:

1. the group's top-level ``resources`` map (KubeRay v1.5+; Ray 2.60's KubeRay
   autoscaler reads it first too),
2. ``rayStartParams`` (``num-cpus``, ``num-gpus``, ``memory`` in bytes),
3. the Ray container's ``resources.limits``,
4. the Ray container's ``resources.requests``.

This is the order of Ray's own KubeRay autoscaler
(``_get_num_cpus`` / ``_get_num_gpus`` / ``_get_memory`` in
``ray/autoscaler/_private/kuberay/autoscaling_config.py``), so a group is the
same size to us as to Ray. Like Ray, container quantities are rounded *up*
to whole units: a ``cpu: 500m`` limit is 1 CPU (KubeRay's pod.go does the
same when it writes ``--num-cpus`` from the limit, via ``Quantity.Value()``,
which rounds up), and memory is a whole number of bytes.

GPUs come from the first limit (then request) whose name ends in ``gpu`` and
is positive (``nvidia.com/gpu``, ``amd.com/gpu``); TPUs from
``google.com/tpu``. Custom resources come from the ``resources`` rayStartParam,
a JSON object. KubeRay documents it wrapped in an extra pair of quotes with
escaped inner quotes (``'"{\\"TPU\\": 4}"'``) because it is pasted into a shell
command; both that and plain JSON (``'{"TPU": 4}'``) are accepted.
``object-store-memory`` becomes ``object_store_memory``.

Zero-valued entries are left out, except ``CPU``: when any source states the
CPU count it is kept even if 0, so a head with ``num-cpus: "0"`` shows
``{"CPU": 0}`` (it schedules no tasks) rather than looking unspecified. With
no CPU source at all ``CPU`` is absent, and ``ray start`` would detect the
machine's CPUs.

Every amount is at most :data:`MAX_NODE_RESOURCE` (10^14, Ray's
``MAX_RESOURCE_QUANTITY``): ``ray start`` refuses a node with more of any
resource (``memory`` and ``object_store_memory`` are bytes, so at most 10^14
bytes, about 91 TiB). A larger number is refused when the spec is read, at
the field that says it, instead of failing every autoscaler round later.

The inputs are already validated by the models (quantities parse and are not
negative; numeric rayStartParams are integers; the custom-resources JSON is
an object of non-negative numbers; no amount is above the bound):
:func:`check_ray_start_params` and :func:`check_node_resources` are that
validation, so deriving never fails.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal

from rayscale.api.errors import Loc, describe
from rayscale.api.pod import Container
from rayscale.api.quantity import QuantityError, parse_quantity, round_up, shown
from rayscale.api.ray_start_options import RAY_START_OPTIONS, RAY_VERSION

CPU = "CPU"
GPU = "GPU"
TPU = "TPU"
MEMORY = "memory"
OBJECT_STORE_MEMORY = "object_store_memory"

# Resources that only describe a node and cannot make it do work.
_NON_WORK = frozenset({OBJECT_STORE_MEMORY})
# Names Ray refuses as custom resources in ``ray start --resources``.
_RESERVED = {
    CPU: "num-cpus",
    GPU: "num-gpus",
    MEMORY: "memory",
    OBJECT_STORE_MEMORY: "object-store-memory",
}
# Names of the group ``resources`` map that are not custom resources.
_GROUP_STANDARD = frozenset({CPU, GPU, TPU, MEMORY})
_TPU_KEY = "google.com/tpu"
#: The most of any one resource a Ray node may have: Ray's
#: ``ray._private.ray_constants.MAX_RESOURCE_QUANTITY`` (``ray start`` checks it).
MAX_NODE_RESOURCE = 10**14
_BOUND = f"at most {MAX_NODE_RESOURCE} (1e14, the most Ray accepts for one node)"
_NON_NEGATIVE_INT = re.compile(r"\s*\+?\d+\s*")
_INTEGER_PARAMS = ("num-cpus", "num-gpus", "memory", "object-store-memory")
_CUSTOM_PARAM = "resources"


def check_ray_start_params(params: Mapping[str, str]) -> list[tuple[Loc, str, str]]:
    """Problems of the params, as ``(key, message, value)``; [] when usable.

    Every key must be a ``ray start`` option of the installed Ray (the generated
    :mod:`rayscale.api.ray_start_options`) and its value of that option's kind;
    the resource params must also be what the resource derivation can read.
    """
    problems: list[tuple[Loc, str, str]] = [
        ((key,), message, value)
        for key, value in params.items()
        if (message := _option_problem(key, value)) is not None
    ]
    for name in _INTEGER_PARAMS:
        value = params.get(name)
        unit = " (bytes)" if "memory" in name else ""
        if value is not None and not _NON_NEGATIVE_INT.fullmatch(value):
            problems.append(
                ((name,), f"must be a non-negative integer{unit}, got {shown(value)}", value)
            )
        elif value is not None and _too_large(value):
            problems.append(((name,), f"must be {_BOUND}{unit}, got {shown(value)}", value))
    custom = params.get(_CUSTOM_PARAM)
    if custom is not None:
        try:
            parsed = parse_custom_resources(custom)
        except ValueError as exc:
            problems.append(((_CUSTOM_PARAM,), str(exc), custom))
        else:
            for resource, flag in _RESERVED.items():
                if resource in parsed:
                    problems.append((
                        (_CUSTOM_PARAM,),
                        f"{resource!r} cannot be a custom resource; use the {flag!r} param",
                        custom,
                    ))
    return problems


_TRUE_FALSE = frozenset({"true", "false"})
# what click's BoolParamType accepts
_BOOL_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "y", "n", "on", "off", "t", "f"})
_INTEGER = re.compile(r"\s*[+-]?\d{1,19}\s*")
_INT64 = 2**63


def _option_problem(key: str, value: str) -> str | None:
    kind = RAY_START_OPTIONS.get(key)
    if kind is None:
        close = difflib.get_close_matches(key, RAY_START_OPTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"not a `ray start` option of Ray {RAY_VERSION}{hint}"
    text = value.strip().lower()
    if kind == "flag" and text not in _TRUE_FALSE:
        return f"a flag: must be \"true\" or \"false\", got {shown(value)}"
    if kind == "bool" and text not in _BOOL_WORDS:
        return f"must be \"true\" or \"false\", got {shown(value)}"
    if kind == "int" and key not in _INTEGER_PARAMS and not (
        _INTEGER.fullmatch(value) and abs(int(value)) < _INT64
    ):  # the resource params have their own, stricter check below
        return f"must be an integer (64-bit), got {shown(value)}"
    if kind == "int" and key.endswith("-port") and _INTEGER.fullmatch(value) \
            and not 0 <= int(value) <= 65535:
        return f"must be a port number (0-65535), got {shown(value)}"
    if kind == "float":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            return f"must be a number, got {shown(value)}"
    if kind.startswith("choice:") and value not in (choices := kind[7:].split("|")):
        return f"must be one of {', '.join(choices)}, got {shown(value)}"
    if any(ord(c) < 32 for c in value):
        return "must not contain control characters (newlines...)"
    return None


def check_node_resources(
    container: Container,
    group_resources: Mapping[str, str | int | float] | None = None,
    container_loc: Loc = ("template", "spec", "containers", 0),
) -> list[tuple[Loc, str, object]]:
    """Amounts above :data:`MAX_NODE_RESOURCE`, as ``(location, message, value)``.

    Locations are relative to the group: ``("resources", "CPU")`` for the
    group's map, ``container_loc`` + ``("resources", "limits", "cpu")`` for
    the Ray container's quantities that become Ray resources (``cpu``,
    ``memory``, ``*gpu``, ``google.com/tpu``). Quantities that do not parse
    are left to the models' own checks.
    """
    problems: list[tuple[Loc, str, object]] = []
    for name, value in (group_resources or {}).items():
        problems += _over_bound(("resources", name), value)
    for kind in ("limits", "requests"):
        quantities = getattr(container.resources, kind)
        for key, value in quantities.items():
            if key in ("cpu", "memory", _TPU_KEY) or key.endswith("gpu"):
                problems += _over_bound((*container_loc, "resources", kind, key), value)
    return problems


def _over_bound(loc: Loc, value: str | int | float) -> list[tuple[Loc, str, object]]:
    try:
        amount = round_up(parse_quantity(value))
    except QuantityError:
        return []
    if amount <= MAX_NODE_RESOURCE:
        return []
    return [(loc, f"must be {_BOUND}, got {shown(value)}", value)]


def _too_large(digits: str) -> bool:
    """Whether a string of digits (``_NON_NEGATIVE_INT``) is above the bound."""
    significant = digits.strip().lstrip("+").lstrip("0")
    return len(significant) > 15 or int(significant or "0") > MAX_NODE_RESOURCE


def derive_ray_resources(
    ray_start_params: Mapping[str, str],
    container: Container,
    group_resources: Mapping[str, str | int | float] | None = None,
) -> dict[str, float]:
    """The Ray resources of one node of a group (see the module docstring)."""
    group = {k: _whole(v) for k, v in (group_resources or {}).items()}
    num_cpus = _int_param(ray_start_params, "num-cpus")
    num_gpus = _int_param(ray_start_params, "num-gpus")
    param_memory = _int_param(ray_start_params, "memory")
    object_store = _int_param(ray_start_params, "object-store-memory")
    limits = {k: _whole(v) for k, v in container.resources.limits.items()}
    requests = {k: _whole(v) for k, v in container.resources.requests.items()}

    cpu = _first(group.get(CPU), num_cpus, limits.get("cpu"), requests.get("cpu"))
    gpu = _first(group.get(GPU), num_gpus, _gpu(limits), _gpu(requests))
    memory = _first(group.get(MEMORY), param_memory, limits.get("memory"), requests.get("memory"))
    # Like Ray, a group ``resources`` map replaces the rayStartParam entirely.
    if group_resources:
        custom = {k: v for k, v in group.items() if k not in _GROUP_STANDARD}
    else:
        custom = _custom_param(ray_start_params)
    tpu = _first(
        group.get(TPU),
        custom.pop(TPU, None),
        _positive(limits, _TPU_KEY),
        _positive(requests, _TPU_KEY),
    )

    result: dict[str, float] = {}
    if cpu is not None:
        result[CPU] = float(cpu)
    for name, amount in ((GPU, gpu), (MEMORY, memory), (TPU, tpu)):
        if amount is not None and amount > 0:
            result[name] = float(amount)
    for name, amount in sorted(custom.items()):
        if amount > 0:
            result[name] = float(amount)
    if object_store is not None and object_store > 0:
        result[OBJECT_STORE_MEMORY] = float(object_store)
    return result


def can_run_work(resources: Mapping[str, float]) -> bool:
    """Whether a node with these resources could ever run a task or actor."""
    return any(value > 0 for name, value in resources.items() if name not in _NON_WORK)


def parse_custom_resources(text: str) -> dict[str, Decimal]:
    """Parse the ``resources`` rayStartParam: a JSON object of name to amount.

    Accepts plain JSON and KubeRay's shell-quoted form ``"{\\"TPU\\": 4}"``
    (outer quotes dropped and backslashes removed, as Ray's KubeRay
    autoscaler does). Raises ValueError with a user-facing reason.
    """
    example = """like '{"custom": 1}'"""
    body = text.strip()
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'":
        body = body[1:-1].replace("\\", "")
    elif '\\"' in body:
        body = body.replace('\\"', '"')
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"must be a JSON object {example}: {exc.msg} in {shown(text)}"
        ) from None
    except RecursionError:
        raise ValueError(f"must be a JSON object {example}: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ValueError(f"must be a JSON object {example}: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"must be a JSON object {example}, got {describe(parsed)}")
    result: dict[str, Decimal] = {}
    for name, amount in parsed.items():
        if not name:
            raise ValueError("resource names must not be empty")
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or (isinstance(amount, float) and not math.isfinite(amount))
            or amount < 0
        ):
            raise ValueError(
                f"resource {shown(name)} must be a non-negative number, got {_described(amount)}"
            )
        if amount > MAX_NODE_RESOURCE:
            raise ValueError(
                f"resource {shown(name)} must be {_BOUND}, got {_described(amount)}"
            )
        result[name] = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    return result


def _described(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return shown(value)  # "an integer of N digits"
    return describe(value)


def _whole(quantity: str | int | float) -> Decimal:
    return Decimal(round_up(parse_quantity(quantity)))


def _int_param(params: Mapping[str, str], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or not _NON_NEGATIVE_INT.fullmatch(value):
        return None
    return Decimal(int(value))


def _custom_param(params: Mapping[str, str]) -> dict[str, Decimal]:
    value = params.get(_CUSTOM_PARAM)
    if value is None:
        return {}
    try:
        parsed = parse_custom_resources(value)
    except ValueError:
        return {}
    return {k: v for k, v in parsed.items() if k not in _RESERVED}


def _first(*candidates: Decimal | None) -> Decimal | None:
    return next((c for c in candidates if c is not None), None)


def _gpu(quantities: Mapping[str, Decimal]) -> Decimal | None:
    """The first positive quantity named ``*gpu`` (Ray supports one GPU type per node)."""
    return next((v for k, v in quantities.items() if k.endswith("gpu") and v > 0), None)


def _positive(quantities: Mapping[str, Decimal], key: str) -> Decimal | None:
    value = quantities.get(key)
    return value if value is not None and value > 0 else None
