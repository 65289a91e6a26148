"""``python -m rayscale.vnode``: the same as ``rayscale vnode``."""

import typer

from rayscale.cli.dev_cmds import vnode_command

if __name__ == "__main__":
    typer.run(vnode_command)
