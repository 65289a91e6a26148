"""Validation errors that name the field path, collected before raising.

A cluster file is validated in one pass that *collects* every problem into an
:class:`ErrorList` and raises one :class:`SpecError` at the end, so a user
fixes all mistakes in one edit instead of one per run.

Paths follow the manifest: ``metadata.name``, ``apiVersion`` and ``kind`` at
the top, and fields under ``spec`` *without* the ``spec.`` prefix
(``workerGroupSpecs[1].maxReplicas``), because nearly everything lives there.
Map keys that are not plain identifiers are written in brackets, as
Kubernetes does: ``resources.limits[nvidia.com/gpu]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class SpecError(ValueError):
    """A cluster spec that cannot be used; one message per problem.

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


def key_path(parent: str, *keys: object) -> str:
    """The path of the entry reached from ``parent`` through map ``keys``."""
    path = parent
    for key in keys:
        text = str(key)
        if not _PLAIN_KEY.fullmatch(text):
            path = f"{path}[{text}]"
        else:
            path = f"{path}.{text}" if path else text
    return path


def index_path(parent: str, index: int) -> str:
    """The path of item ``index`` of the list at ``parent``."""
    return f"{parent}[{index}]"


def describe(value: object) -> str:
    """A short, user-facing description of a YAML value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class ErrorList:
    """Collects ``<path>: <reason>`` messages; raises them all at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, path: str, reason: str) -> None:
        self.messages.append(f"{path}: {reason}")

    def __len__(self) -> int:
        return len(self.messages)

    def raise_if_any(self) -> None:
        if self.messages:
            raise SpecError(self.messages)
