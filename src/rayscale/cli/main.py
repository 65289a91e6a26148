"""Entry point: `rayscale up | down | status | logs | submit | job | serve | plan | ...`."""

from __future__ import annotations

import typer

from rayscale.cli.autoscaler_cmd import autoscaler_command
from rayscale.cli.crd_cmd import crds_command
from rayscale.cli.dev_cmds import dev_cluster_app, vnode_command
from rayscale.cli.job_cmds import job_app
from rayscale.cli.local_cmds import (
    down_command,
    resume_command,
    status_command,
    submit_command,
    token_command,
    up_command,
)
from rayscale.cli.logs_cmd import logs_command
from rayscale.cli.operator_cmd import operator_command
from rayscale.cli.plan_cmd import plan_command
from rayscale.cli.queue_cmd import queue_command
from rayscale.cli.serve_cmds import serve_app
from rayscale.cli.ui_cmd import ui_command

app = typer.Typer(
    name="rayscale",
    help="Elastic Ray clusters: local autoscaling today, Kubernetes next.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("up")(up_command)
app.command("down")(down_command)
app.command("status")(status_command)
app.command("logs")(logs_command)
app.command("resume")(resume_command)
app.command("token")(token_command)
app.command("submit", context_settings={"allow_interspersed_args": False})(submit_command)
app.command("plan")(plan_command)
app.command("autoscaler")(autoscaler_command)
app.command("operator")(operator_command)
app.command("crds")(crds_command)
app.add_typer(job_app, name="job")
app.add_typer(serve_app, name="serve")
app.add_typer(dev_cluster_app, name="dev-cluster")
app.command("vnode")(vnode_command)
app.command("ui")(ui_command)
app.command("queue")(queue_command)


@app.callback()
def _root() -> None:
    """Elastic Ray clusters: local autoscaling today, Kubernetes next."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
