"""Read a RayCluster YAML file (one document) and parse it.

Every way a file can be unusable, including being unreadable, is reported as
a :class:`~.errors.SpecError`, so callers handle exactly one exception type.
File-level problems are prefixed with the file name (there is no field path
yet), YAML syntax errors with the line and column YAML reports.

Before PyYAML builds the document, libyaml's event parser (fast, and not
recursive) checks its shape: PyYAML's composer recurses once per level and
its scanner slows down with depth, so a file nested a few hundred levels deep
would take seconds and end in a RecursionError, one whose aliases expand to
billions of values would exhaust memory, and an integer of more than 4300
digits cannot be converted by Python. A RayCluster manifest is about 15
levels deep and has a few hundred values.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from rayscale.api import RayCluster, SpecError, describe

from .parse import parse_cluster_spec


def load_cluster_spec(path: str | Path) -> RayCluster:
    """Load and validate the RayCluster manifest at ``path``."""
    return parse_cluster_spec(read_document(Path(path)))


def read_document(path: Path, kind: str = "RayCluster") -> dict[str, Any]:
    """The one YAML document (a mapping) of the ``kind`` manifest at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"{path}: cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return parse_document(text, str(path), kind)


def parse_document(text: str, where: str, kind: str = "RayCluster") -> dict[str, Any]:
    """The one YAML document (a mapping) of ``text``; problems are prefixed with ``where``
    (a file, or the field a YAML string came from, such as a RayService's
    ``serveConfigV2``)."""
    path = where
    _check_shape(text, path)
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: {_yaml_problem(exc)}"]) from None
    except RecursionError:  # only without libyaml (_check_shape catches it first)
        raise SpecError([f"{path}: invalid YAML: nested too deeply"]) from None
    except ValueError as exc:  # the same: an integer with too many digits
        raise SpecError([f"{path}: invalid YAML: {exc}"]) from None
    if not documents:
        raise SpecError([f"{path}: empty file (expected a {kind} manifest)"])
    if len(documents) > 1:
        raise SpecError(
            [f"{path}: expected one YAML document (a {kind}), found {len(documents)}"]
        )
    document = documents[0]
    if not isinstance(document, dict):
        raise SpecError(
            [f"{path}: expected a mapping (a {kind} manifest), got {describe(document)}"]
        )
    return document


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``invalid YAML at line L, column C: <problem>`` (1-based, as editors count)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is not None:
            return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {exc}"


#: Deeper than any manifest, shallow enough for PyYAML's recursion.
MAX_DEPTH = 100
#: Values (scalars and collections) of a document once its aliases are expanded.
MAX_VALUES = 1_000_000
_INTEGER = re.compile(r"[-+]?[0-9][0-9_]*")


def _check_shape(text: str, path: Path | str) -> None:
    """Refuse documents nested too deeply, too large with aliases, or with giant integers.

    Uses libyaml's events when PyYAML has libyaml (it always has in the wheels
    rayscale installs); without it, the full parse's RecursionError and
    ValueError are caught instead. Syntax errors are left to the full parse,
    which words them as before.
    """
    if not getattr(yaml, "__with_libyaml__", False):
        return
    digits_limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    stack: list[list[Any]] = []  # per open collection: [values so far, anchor]
    anchors: dict[str, int] = {}
    total = 0

    def add(values: int, event: Any) -> None:
        nonlocal total
        if stack:
            stack[-1][0] += values
        total += values if not stack else 0
        if total > MAX_VALUES or (stack and stack[-1][0] > MAX_VALUES):
            _shape_error(path, event, f"more than {MAX_VALUES} values once aliases are expanded")

    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.DocumentStartEvent):
                anchors.clear()
                total = 0
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                stack.append([1, event.anchor])
                if len(stack) > MAX_DEPTH:
                    _shape_error(path, event, f"nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                values, anchor = stack.pop()
                if anchor is not None:
                    anchors[anchor] = values
                add(values, event)
            elif isinstance(event, yaml.ScalarEvent):
                plain = not event.style and event.implicit[0]
                if plain and digits_limit and _INTEGER.fullmatch(event.value):
                    digits = len(event.value.lstrip("+-").replace("_", "").lstrip("0"))
                    if digits > digits_limit:
                        _shape_error(path, event, f"an integer of {digits} digits")
                if event.anchor is not None:
                    anchors[event.anchor] = 1
                add(1, event)
            elif isinstance(event, yaml.AliasEvent):
                add(anchors.get(event.anchor or "", 1), event)
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem) and exc.problem_mark is not None:
            mark = exc.problem_mark
            raise SpecError([
                f"{path}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                f"nested more than {MAX_DEPTH} levels deep"
            ]) from None
        return  # the full parse reports it, in PyYAML's words
    except yaml.YAMLError:
        return


def _shape_error(path: Path | str, event: Any, problem: str) -> None:
    mark = event.start_mark
    raise SpecError(
        [f"{path}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"]
    )
