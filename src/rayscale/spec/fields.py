"""Typed readers over a raw YAML mapping that report problems by path.

Each reader records at most one error in an :class:`~.errors.ErrorList` and
always returns a usable value (the default when the field is absent *or*
invalid), so validation carries on and reports every problem in one go. The
returned value only matters when no error was recorded.

As in Kubernetes, an explicit ``null`` means the same as an absent field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ErrorList, describe, key_path

INT32_MAX = 2_147_483_647

NumberCheck = Callable[[float], str | None]


def get(mapping: Mapping[str, Any], key: str) -> Any:
    """The value at ``key``, or None when absent or null."""
    return mapping.get(key)


def as_mapping(value: Any, path: str, errors: ErrorList) -> Mapping[str, Any] | None:
    """``value`` if it is a mapping, else None (recording an error unless null)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.add(path, f"must be a mapping, got {describe(value)}")
        return None
    return value


def read_mapping(
    mapping: Mapping[str, Any], key: str, parent: str, errors: ErrorList, *, required: bool = False
) -> Mapping[str, Any] | None:
    """The sub-mapping at ``key``; None when absent (an error if required) or invalid."""
    path = key_path(parent, key)
    value = get(mapping, key)
    if value is None:
        if required:
            errors.add(path, "required")
        return None
    return as_mapping(value, path, errors)


def read_list(
    mapping: Mapping[str, Any], key: str, parent: str, errors: ErrorList
) -> list[Any] | None:
    """The list at ``key``; None when absent or invalid."""
    value = get(mapping, key)
    if value is None:
        return None
    if not isinstance(value, list):
        errors.add(key_path(parent, key), f"must be a list, got {describe(value)}")
        return None
    return value


def read_int(
    mapping: Mapping[str, Any],
    key: str,
    parent: str,
    errors: ErrorList,
    *,
    default: int,
    minimum: int | None = 0,
    maximum: int = INT32_MAX,
) -> int:
    """An integer field (YAML int, not bool/float/string) within bounds."""
    value = get(mapping, key)
    if value is None:
        return default
    path = key_path(parent, key)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, f"must be an integer, got {describe(value)}")
        return default
    if minimum is not None and value < minimum:
        reason = "must not be negative" if minimum == 0 else f"must be >= {minimum}"
        errors.add(path, f"{reason}, got {value}")
        return default
    if value > maximum:
        errors.add(path, f"must be <= {maximum}, got {value}")
        return default
    return value


def read_number(
    mapping: Mapping[str, Any],
    key: str,
    parent: str,
    errors: ErrorList,
    *,
    check: NumberCheck | None = None,
) -> float | None:
    """A finite number (int or float, not bool); None when absent or invalid.

    ``check`` returns a reason string when the number is out of range.
    """
    value = get(mapping, key)
    if value is None:
        return None
    path = key_path(parent, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.add(path, f"must be a number, got {describe(value)}")
        return None
    number = float(value)
    if not math.isfinite(number):
        errors.add(path, f"must be a finite number, got {value!r}")
        return None
    if check is not None:
        reason = check(number)
        if reason is not None:
            errors.add(path, reason)
            return None
    return number


def non_negative(number: float) -> str | None:
    """A :data:`NumberCheck` for ``>= 0``."""
    return None if number >= 0 else f"must not be negative, got {number:g}"


def read_bool(
    mapping: Mapping[str, Any], key: str, parent: str, errors: ErrorList, *, default: bool
) -> bool:
    """A YAML boolean (``true``/``false``, not the string ``"true"``)."""
    value = get(mapping, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        errors.add(key_path(parent, key), f"must be a boolean, got {describe(value)}")
        return default
    return value


def read_str(mapping: Mapping[str, Any], key: str, parent: str, errors: ErrorList) -> str | None:
    """A string field; None when absent or invalid."""
    value = get(mapping, key)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(
            key_path(parent, key), f"must be a string, got {describe(value)} (quote it in YAML)"
        )
        return None
    return value


def read_labels(
    mapping: Mapping[str, Any], key: str, parent: str, errors: ErrorList
) -> dict[str, str]:
    """A Kubernetes label map: string keys to string values.

    Unquoted ``true`` or ``1`` become YAML booleans/numbers, which Kubernetes
    rejects as label values, so they are errors here too.
    """
    path = key_path(parent, key)
    labels = read_mapping(mapping, key, parent, errors)
    result: dict[str, str] = {}
    for name, value in (labels or {}).items():
        if not isinstance(value, str):
            errors.add(
                key_path(path, name),
                f"must be a string, got {describe(value)} (quote it in YAML)",
            )
            continue
        result[str(name)] = value
    return result


def read_ray_start_params(
    mapping: Mapping[str, Any], parent: str, errors: ErrorList
) -> dict[str, str]:
    """``rayStartParams``: a map of ``ray start`` flag (without ``--``) to value.

    KubeRay declares the values as strings; YAML users often write numbers or
    booleans unquoted, so scalars are accepted and stored as strings
    (booleans as ``"true"``/``"false"``, null as ``""``).
    """
    key = "rayStartParams"
    path = key_path(parent, key)
    params = read_mapping(mapping, key, parent, errors)
    result: dict[str, str] = {}
    for name, value in (params or {}).items():
        if value is None:
            result[str(name)] = ""
        elif isinstance(value, bool):
            result[str(name)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            result[str(name)] = str(value)
        else:
            errors.add(key_path(path, name), f"must be a string, got {describe(value)}")
    return result
