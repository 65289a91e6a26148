"""The Python that Ray's node daemons are started with on a forked node (agent_server.py).

This file is copied, behind a ``#!<python> -IS`` line, into the node's private
directory, and the node's `ray start` runs with ``sys.executable`` set to that copy.
It must start in milliseconds, so it uses the standard library only and runs
without site-packages (``-S``) or the caller's PYTHON* variables (``-I``).

``<stub> -u SCRIPT ARGS...`` (how Ray starts its agents and the log monitor) is sent
to the node's fork server with the stub's environment, working directory and
standard streams. If the server forks it, the stub stays as the process Ray
started: it passes signals on to the forked process and ends as that process
ended. Anything else, or any failure to reach the server, runs the real Python
with the same arguments (``exec``), as if the stub were not there.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys

SOCKET_ENV = "RAYSCALE_AGENT_SOCKET"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != SOCKET_ENV}


def _forked(path: str, argv: list[str]) -> int | None:
    """Have the server run ``argv``; its exit code, or None if it did not fork it."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(path)
        request = {"argv": argv, "env": _environment(), "cwd": os.getcwd()}
        socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
        answer = json.loads(conn.recv(65536) or b"{}")
    except (OSError, ValueError):
        return None
    pid = answer.get("pid") if isinstance(answer, dict) else None
    if not isinstance(pid, int):
        conn.close()
        return None

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    while True:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            break
        message = json.loads(data)
        if isinstance(message, dict) and isinstance(message.get("exit"), int):
            return int(message["exit"])
    # the server is gone (its node stopped): wait for the process itself
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return 1
    select.select([pidfd], [], [])
    return 1


def main() -> None:
    argv = sys.argv[1:]
    path = os.environ.get(SOCKET_ENV)
    if path and len(argv) >= 2 and argv[0] == "-u":
        code = _forked(path, argv)
        if code is not None:
            if code < 0:  # ended by a signal: end the same way
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            sys.exit(code & 0xFF)
    os.execve(sys.executable, [sys.executable, *argv], _environment())


if __name__ == "__main__":
    main()
