"""Start local worker nodes by forking one process that imported Ray once (a "zygote").

A `ray start --block` of a worker spends its first 1.7-2.0 CPU-seconds importing
Ray's CLI before any Ray process starts, and keeps 118 MB private for the node's
life (docs/local-nodes.md). On a 2-core machine starting ten nodes is CPU-bound,
so that import is what the last node waits for. The zygote pays it once per
cluster: for each node it forks a child that becomes a session of its own (as
`procs.spawn` makes `ray start`) and runs Ray's own ``ray start`` click command
in-process, with the same arguments. Everything `ray start --block` does is
Ray's code, unchanged: the options, the config fetch from the GCS, the node's
processes, the SIGTERM handler that stops them, and the loop that ends the node
when its raylet dies. Measured in a prototype (notes in docs/local-nodes.md):
a node alive in 2.6 s instead of 6.2 s, 100 MB less per node.

Forking is safe only in a process with one thread and no gRPC channel: the zygote
never talks to Ray, and imports Ray with numpy's and pyarrow's import-time
threads turned off (:data:`SINGLE_THREAD_ENV`); it checks ``/proc/self/task``
before every fork and refuses when it has more than one thread. Ray's C++ ID
generator is seeded once per process, and importing Ray's CLI draws from it in
the zygote: every child would draw the same node id. The child takes its node id
from the kernel and hands it to Ray through ``RAY_OVERRIDE_NODE_ID_FOR_TESTING``,
the variable Ray's own fake multi-node provider uses for the same purpose.

Protocol: one JSON object per line. The zygote says ``{"ready": true}`` once Ray
is imported; each request ``{"argv": [...], "env": {...}, "log": PATH}`` gets
``{"pid": N, "start_time": T}`` (T from ``/proc/N/stat``) or ``{"error": "..."}``.
At the end of its input (its owner exited) the zygote exits; the nodes it started
run on, each in its own session.

Run as ``python -m rayscale.local.zygote``; :class:`rayscale.local.zygote_client.Zygote`
starts and talks to it.
"""

from __future__ import annotations

import os

from rayscale.local import agent_server
from rayscale.procs import start_time

#: Set in the zygote only, before Ray is imported: numpy's OpenBLAS pool and
#: pyarrow's jemalloc background thread would otherwise start threads at import.
SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"
NODE_ID_BYTES = 28  # Ray's NodeID size


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _become_node(request: dict[str, object], preset: dict[str, str | None]) -> None:
    """In the forked child: run ``ray start`` with ``request["argv"]``. Never returns."""
    import atexit
    import signal
    import sys

    code = 1
    try:
        os.setsid()
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(devnull)
        os.close(log)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        atexit._clear()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for name, value in preset.items():  # the node's processes get the caller's values
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        env = request.get("env") or {}
        assert isinstance(env, dict)
        os.environ.update({str(k): str(v) for k, v in env.items()})
        os.environ[NODE_ID_ENV] = os.urandom(NODE_ID_BYTES).hex()
        agents = request.get("agents")
        if isinstance(agents, str):  # Ray's agents and log monitor forked too
            stub = agent_server.start(agents)
            if stub is not None:
                sys.executable = stub
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        sys.argv = ["ray", *argv]
        import ray.scripts.scripts as ray_scripts

        try:
            ray_scripts.cli.main(args=argv, prog_name="ray", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        atexit._run_exitfuncs()  # Ray's: stop the node's processes
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def serve() -> None:
    """The zygote's loop: read requests on stdin, fork a node for each, reap them."""
    import gc
    import json
    import selectors
    import sys

    preset = {name: os.environ.get(name) for name in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)
    os.environ.update(agent_server.PIPE_CHECK_ENV)  # kept: the nodes' raylets read it
    import ray
    import ray.scripts.scripts  # noqa: F401  (what each child runs)

    agent_server.preload()

    out = sys.stdout

    def say(message: dict[str, object]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    say({"ready": True, "threads": _threads()})
    gc.freeze()  # the imported modules stay on pages the children share
    selector = selectors.DefaultSelector()
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    pending = b""
    while True:
        if selector.select(timeout=0.5):
            chunk = os.read(stdin, 65536)
            if not chunk:
                return  # the owner is gone; the nodes live on in their own sessions
            pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if not line.strip():
                continue
            request = json.loads(line)
            threads = _threads()
            if threads != 1:
                say({"error": f"the zygote has {threads} threads: forking is not safe"})
                continue
            pid = os.fork()
            if pid == 0:
                _become_node(request, preset)
            say({"pid": pid, "start_time": start_time(pid)})
        _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    serve()
