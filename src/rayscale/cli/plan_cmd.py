"""`rayscale plan STATE.json`: the planner as a dry run (plan-format.md).

Whatever the input, the outcome is a plan (exit 0) or one line naming the
JSON path of the problem (exit 2): bytes that are not UTF-8, JSON nested
deeper than Python's parser recurses, and integers longer than Python
converts (4300 digits) are reported at ``$`` with their place in the text,
everything else by :func:`rayscale.planner.parse_state` at its path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from rayscale.planner import PlanFormatError, plan_json


class _TooLong(ValueError):
    def __init__(self, digits: str) -> None:
        super().__init__(digits)
        self.digits = digits


def plan_command(
    state: str = typer.Argument(..., help="ClusterState JSON file, or - for stdin"),
) -> None:
    """Print the Plan for a ClusterState document (exit 2 if the document is invalid)."""
    try:
        data = sys.stdin.buffer.read() if state == "-" else Path(state).read_bytes()
    except OSError as exc:
        typer.echo(f"{state}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    try:
        result = plan_json(_document(data))
    except PlanFormatError as exc:
        _fail(str(exc).splitlines()[0])
    typer.echo(json.dumps(result, indent=2))


def _document(data: bytes) -> Any:
    """The JSON document in ``data``; exits 2 naming where it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        _fail(f"$: not UTF-8 text at line {line} (byte {exc.start}): {exc.reason}")
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as exc:
        _fail(f"$: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except RecursionError:
        _fail("$: invalid JSON: nested too deeply")
    except _TooLong as exc:
        at = text.find(exc.digits)
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        _fail(
            f"$: invalid JSON at line {line} column {column}: an integer of "
            f"{len(exc.digits.lstrip('-'))} digits (out of range)"
        )


def _int(digits: str) -> int:
    # int() refuses more than 4300 digits (sys.get_int_max_str_digits) with a
    # ValueError that says nothing of where; no field takes more than 19 anyway
    if len(digits) > 1000:
        raise _TooLong(digits)
    return int(digits)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)
