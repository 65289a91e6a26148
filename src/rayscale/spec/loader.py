"""Read a RayCluster YAML file (one document) and parse it.

Every way a file can be unusable, including being unreadable, is reported as
a :class:`~.errors.SpecError`, so callers handle exactly one exception type.
File-level problems are prefixed with the file name (there is no field path
yet), YAML syntax errors with the line and column YAML reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rayscale.api import RayCluster, SpecError, describe

from .parse import parse_cluster_spec


def load_cluster_spec(path: str | Path) -> RayCluster:
    """Load and validate the RayCluster manifest at ``path``."""
    return parse_cluster_spec(_read_document(Path(path)))


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"{path}: cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: {_yaml_problem(exc)}"]) from None
    if not documents:
        raise SpecError([f"{path}: empty file (expected a RayCluster manifest)"])
    if len(documents) > 1:
        raise SpecError(
            [f"{path}: expected one YAML document (a RayCluster), found {len(documents)}"]
        )
    document = documents[0]
    if not isinstance(document, dict):
        raise SpecError(
            [f"{path}: expected a mapping (a RayCluster manifest), got {describe(document)}"]
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
