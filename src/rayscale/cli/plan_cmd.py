"""`rayscale plan STATE.json`: the planner as a dry run (plan-format.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from rayscale.planner import PlanFormatError, plan_json


def plan_command(
    state: str = typer.Argument(..., help="ClusterState JSON file, or - for stdin"),
) -> None:
    """Print the Plan for a ClusterState document (exit 2 if the document is invalid)."""
    try:
        text = sys.stdin.read() if state == "-" else Path(state).read_text()
    except OSError as exc:
        typer.echo(f"{state}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        typer.echo(f"$: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", err=True)
        raise typer.Exit(2) from None
    try:
        result = plan_json(document)
    except PlanFormatError as exc:
        typer.echo(str(exc).splitlines()[0], err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2))
