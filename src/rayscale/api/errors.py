"""Validation errors that name the field path, in the words a user understands.

pydantic validates every ``ray.io/v1`` document and collects every problem
with its location; :func:`spec_error` turns that into one :class:`SpecError`
whose messages read like ``workerGroupSpecs[1].maxReplicas: must be >=
minReplicas (2 < 3)``.

Paths follow the manifest: ``metadata.name``, ``apiVersion`` and ``kind`` at
the top, and fields under ``spec`` *without* the ``spec.`` prefix, because
nearly everything lives there. Map keys that are not plain identifiers are
written in brackets, as Kubernetes does: ``resources.limits[nvidia.com/gpu]``.

Validators in the models raise :func:`field_errors` to report problems at a
path *below* the field being validated (a rayStartParams key, say); pydantic
prefixes those paths with the field's own location.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from rayscale.api.quantity import shown

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
Loc = tuple[int | str, ...]
#: The error type of rayscale's own checks; its message is used as written.
_OWN = "rayscale"


class SpecError(ValueError):
    """A document that cannot be used; one message per problem.

    ``errors`` holds messages like
    ``workerGroupSpecs[1].maxReplicas: must be >= minReplicas (2 < 3)``;
    ``str(error)`` is those messages joined by newlines.
    """

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[str]]]:
        # Keep ``errors`` intact across pickling (e.g. multiprocessing).
        return (SpecError, (self.errors,))


def describe(value: object) -> str:
    """A short, user-facing description of a YAML value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int) and _huge(value):
        return shown(value)  # "an integer of 5000 digits"
    if isinstance(value, int | float):
        return f"number {shown(value)}"
    if isinstance(value, str):
        return f"string {shown(value, 60)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def path_of(loc: Sequence[int | str], *, under_spec: bool = True) -> str:
    """``('spec', 'workerGroupSpecs', 1, 'maxReplicas')`` -> ``workerGroupSpecs[1].maxReplicas``."""
    parts = list(loc)
    if under_spec and len(parts) > 1 and parts[0] == "spec":
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int) or not _PLAIN_KEY.fullmatch(part):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path or "document"


def own_error(message: str) -> PydanticCustomError:
    """An error whose message is shown as written (no pydantic prefix)."""
    return PydanticCustomError(_OWN, "{message}", {"message": message})


def field_errors(title: str, problems: Iterable[tuple[Loc, str, Any]]) -> ValidationError:
    """A ValidationError for ``(relative location, message, input)`` problems."""
    details = [
        InitErrorDetails(type=own_error(message), loc=loc, input=value)
        for loc, message, value in problems
    ]
    return ValidationError.from_exception_data(title, details)


def messages(exc: ValidationError, *, under_spec: bool = True) -> list[str]:
    """Every problem of ``exc`` as ``<path>: <reason>``, in the order pydantic found them."""
    out: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not _is_tag(p))
        out.append(f"{path_of(loc, under_spec=under_spec)}: {_reason(err)}")
    return out


def spec_error(exc: ValidationError, *, under_spec: bool = True) -> SpecError:
    return SpecError(messages(exc, under_spec=under_spec))


def _huge(value: object) -> bool:
    """An integer no float can hold."""
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000


def _is_tag(part: int | str) -> bool:
    # pydantic adds the tag of a union/function member to the location; not a field
    return isinstance(part, str) and part.startswith("function-")


def _reason(err: Any) -> str:
    kind: str = err["type"]
    value = err.get("input")
    ctx: dict[str, Any] = err.get("ctx") or {}
    if kind == _OWN:
        return str(ctx["message"])
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {describe(value)}"
    if kind in ("float_type", "float_parsing", "finite_number") and _huge(value):
        return f"is out of range, got {shown(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {shown(value)}"
    if kind == "bool_type" or kind == "bool_parsing":
        return f"must be a boolean, got {describe(value)}"
    if kind == "string_type":
        hint = " (quote it in YAML)" if isinstance(value, bool | int | float) else ""
        return f"must be a string, got {describe(value)}{hint}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"must be a mapping, got {describe(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {describe(value)}"
    if kind == "greater_than_equal":
        bound = ctx.get("ge")
        reason = "must not be negative" if bound == 0 else f"must be >= {bound}"
        return f"{reason}, got {shown(value)}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}, got {shown(value)}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}, got {shown(value)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}, got {describe(value)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    return str(err["msg"])
