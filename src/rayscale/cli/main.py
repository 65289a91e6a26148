"""Entry point: `rayscale up | down | status | submit | plan | autoscaler`.

Commands import what they need lazily so `rayscale plan` stays light (no Ray).
"""

from __future__ import annotations

import typer

from rayscale.cli.plan_cmd import plan_command

app = typer.Typer(
    name="rayscale",
    help="Elastic Ray clusters: local autoscaling today, Kubernetes next.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("plan")(plan_command)


@app.callback()
def _root() -> None:
    """Elastic Ray clusters: local autoscaling today, Kubernetes next."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
