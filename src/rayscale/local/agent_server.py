"""Fork Ray's per-node Python daemons instead of starting a new Python for each.

A worker node runs three Python daemons besides `ray start`: the dashboard agent
and the runtime-env agent (the raylet registers the node only once both wrote their
ports) and the log monitor. Each imports Ray anew: 1.0-1.2, 0.5-0.7 and 0.6
CPU-seconds on a 2-core machine, on the critical path of every scale-up
(docs/local-nodes.md). The zygote imported all of it once already.

How: a node forked from the zygote (zygote.py) forks once more before it runs
`ray start`. That second child, :func:`_serve`, has one thread and Ray's modules
imported, and listens on a Unix socket in the node's private directory (0700).
The node then runs Ray's `ray start` with ``sys.executable`` pointing at a stub
(agent_stub.py, a Python without site-packages that starts in milliseconds). Ray
starts its daemons as ``<sys.executable> -u SCRIPT ...``: the stub sends that
command, its environment, working directory and standard streams (SCM_RIGHTS) to
the server, which forks a child that runs the script as ``__main__``. The stub stays
the process Ray started: it passes signals on and exits as the child exited, so the
raylet's and `ray start`'s supervision work unchanged. Ray's workers, and anything
not in :func:`forkable_scripts`, run in a real Python as before (the stub execs it).

The agents check that the raylet lives by default by looking at their parent
process, which for a forked agent is the server. So forked nodes run with Ray's
pipe-based check instead (:data:`PIPE_CHECK_ENV`, a Ray setting): the agent reads
the pipe the raylet gave it as standard input, which the stub passes on, and exits
when the raylet is gone. The server stops its children when its node's process
exits (a pipe it holds closes).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from rayscale.local import agent_stub

#: Read by the raylet and by the agents (``ray.dashboard.consts``) at import: it must
#: be in the zygote's environment before it imports Ray.
PIPE_CHECK_ENV = {"RAY_enable_pipe_based_agent_to_parent_health_check": "1"}
SOCKET_NAME = "agents.sock"
STUB_NAME = "python"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes
MAX_REQUEST = 1 << 20
STOP_GRACE_S = 3.0

#: The write end of the pipe whose closing tells the server its node ended; held
#: open (not inherited: os.pipe fds are not) for the life of the node's process.
_held: list[int] = []


def forkable_scripts() -> frozenset[str]:
    """The scripts Ray starts as ``python -u SCRIPT`` that the server forks."""
    import ray

    root = os.path.dirname(ray.__file__)
    return frozenset({
        os.path.join(root, "dashboard", "agent.py"),
        os.path.join(root, "_private", "runtime_env", "agent", "main.py"),
        os.path.join(root, "_private", "log_monitor.py"),
    })


def preload() -> None:
    """In the zygote: import what the forked daemons import (about 0.2 s more)."""
    import logging

    import ray._private.log_monitor
    import ray._private.runtime_env.agent.runtime_env_agent
    import ray.dashboard.agent  # noqa: F401
    import ray.dashboard.utils as dashboard_utils

    logger = logging.getLogger(dashboard_utils.__name__)
    level = logger.level
    logger.setLevel(logging.WARNING)  # it lists the modules at INFO
    try:
        dashboard_utils.get_all_modules(dashboard_utils.DashboardAgentModule)
    finally:
        logger.setLevel(level)


def start(directory: str, scripts: frozenset[str] | None = None) -> str | None:
    """In a node's process, before `ray start`: start the server; returns the stub to
    use as ``sys.executable`` (None: the path is too long, start daemons as usual).
    ``scripts``: what it forks (default :func:`forkable_scripts`)."""
    home = Path(directory)
    path = str(home / SOCKET_NAME)
    if len(path.encode()) > MAX_SOCKET_PATH or not _shebang_safe(sys.executable):
        return None
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    if os.statvfs(home).f_flag & os.ST_NOEXEC:  # the stub could not run from there
        return None
    stub = home / STUB_NAME
    source = Path(agent_stub.__file__).read_text()
    fd = os.open(stub, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as out:
        out.write(f"#!{sys.executable} -IS\n{source}")
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    node_end, node_alive = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(node_alive)
        code = 1
        try:
            _serve(listener, node_end, scripts or forkable_scripts())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(node_end)
    listener.close()
    _held.append(node_alive)
    os.environ[agent_stub.SOCKET_ENV] = path
    return str(stub)


def _shebang_safe(python: str) -> bool:
    """The stub's ``#!`` line names this Python: no blanks (the kernel would split the
    path there) and well inside the kernel's 256-byte limit."""
    return len(python.encode()) < 200 and not any(c.isspace() for c in python)


def _serve(listener: socket.socket, node_end: int, scripts: frozenset[str]) -> None:
    """The server's loop: fork a daemon per request, report its end, stop with the node."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(node_end, selectors.EVENT_READ, "node")
    running: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (its stub, pid)

    def close_all() -> None:  # in a forked daemon: none of the server's descriptors
        for key in list(selector.get_map().values()):
            os.close(key.fd)
        for conn, _ in running.values():
            conn.close()
        selector.close()

    while True:
        for key, _ in selector.select():
            if key.data == "node":
                _stop([pid for _, pid in running.values()])
                return
            if key.data == "accept":
                conn, _ = listener.accept()
                forked = _handle(conn, scripts, close_all)
                if forked is None:
                    conn.close()
                else:
                    pidfd = os.pidfd_open(forked)
                    running[pidfd] = (conn, forked)
                    selector.register(pidfd, selectors.EVENT_READ, "child")
                continue
            conn, pid = running.pop(key.fd)
            selector.unregister(key.fd)
            os.close(key.fd)
            _, status = os.waitpid(pid, 0)
            with contextlib.suppress(OSError):  # OSError: the stub is gone
                conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()


def _handle(conn: socket.socket, scripts: frozenset[str],
            close_all: Callable[[], None]) -> int | None:
    """Fork the daemon a stub asks for; its pid, or None (the stub runs it itself)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    fds: list[int] = []
    try:
        data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
        request = json.loads(data)
        argv = [str(a) for a in request["argv"]]
        env = {str(k): str(v) for k, v in request["env"].items()}
        cwd = str(request["cwd"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        for fd in fds:
            os.close(fd)
        return None
    threads = len(os.listdir("/proc/self/task"))
    reason = ("another user" if uid != os.getuid() else
              "not a forkable script" if len(argv) < 2 or argv[1] not in scripts else
              "not three streams" if len(fds) != 3 else
              f"{threads} threads" if threads != 1 else None)
    if reason is not None:
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"declined": reason}).encode())
        return None
    pid = os.fork()
    if pid == 0:
        close_all()
        _become(argv[1:], env, cwd, fds)
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # the stub is gone; the daemon is still reaped
        conn.send(json.dumps({"pid": pid}).encode())
    return pid


def _become(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> None:
    """In the forked daemon: run ``argv[0]`` as ``python -u`` would. Never returns."""
    import runpy

    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        # -u: unbuffered binary layers, text written through at once
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        atexit._clear()
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(argv[0]))
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _stop(pids: list[int]) -> None:
    """The node ended: stop what is still running (SIGTERM, then SIGKILL)."""
    import time

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                left.discard(pid)
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
