"""The local provider's side of the zygote (zygote.py): start it, ask it for nodes.

The zygote is a child of the process that owns the provider (the autoscaler, or
`rayscale up` while it waits for minReplicas), in a session of its own, with the
cluster's environment (so its marker: `down` finds it like any process of the
cluster). It exits when its owner does; the nodes it started do not.

Any failure (it does not start, does not answer in time, refuses to fork) is a
:class:`ZygoteError`: the provider then starts that node with `ray start` as
before, and stops using the zygote.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: ``RAYSCALE_ZYGOTE=0`` starts every node with its own `ray start`.
ZYGOTE_ENV = "RAYSCALE_ZYGOTE"
READY_TIMEOUT_S = 60.0  # importing Ray on a loaded 2-core machine
ANSWER_TIMEOUT_S = 10.0


class ZygoteError(RuntimeError):
    """The zygote cannot start a node; start it with `ray start` instead."""


def mode(env: Mapping[str, str] | None = None) -> str:
    """How nodes start: ``all`` (the default: nodes and their Ray daemons forked),
    ``nodes`` (nodes forked, daemons started as usual) or ``off`` (a `ray start` per
    node). A bad value is a ValueError naming the variable."""
    raw = (os.environ if env is None else env).get(ZYGOTE_ENV, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on", "all"):
        return "all"
    if raw == "nodes":
        return "nodes"
    if raw in ("0", "false", "no", "off"):
        return "off"
    raise ValueError(f"{ZYGOTE_ENV}={raw!r}: expected 1 (nodes and their Ray daemons "
                     "forked from one process that imported Ray once, the default), "
                     "nodes (only the nodes forked) or 0 (a `ray start` per node)")


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether nodes start through the zygote (the default); a bad value is a ValueError."""
    return mode(env) != "off"


class Zygote:
    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rayscale.local.zygote"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                env=dict(env), start_new_session=True, close_fds=True,
            )
        self._lock = threading.Lock()
        self._ready = False
        self._buffer = b""
        #: what the zygote said once it imported Ray (``threads``: its thread count)
        self.ready: dict[str, object] = {}

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log: Path,
              agents: str | None = None) -> tuple[int, int]:
        """Start one node; ``argv``: the `ray` command's arguments (``start``, ...);
        ``agents``: a directory for the node's daemon fork server (agent_server.py), or
        None to start Ray's daemons as usual. Returns the node's process: (pid, start time)."""
        with self._lock:
            if not self._ready:
                self.ready = self._read(READY_TIMEOUT_S)
                self._ready = True
            request = {"argv": list(argv), "env": dict(env), "log": str(log), "agents": agents}
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except (OSError, ValueError) as exc:  # a closed pipe, or closed here
                raise ZygoteError(f"the zygote is gone: {exc}") from exc
            answer = self._read(ANSWER_TIMEOUT_S)
        if "error" in answer:
            raise ZygoteError(str(answer["error"]))
        pid, started = answer.get("pid"), answer.get("start_time")
        if not isinstance(pid, int) or not isinstance(started, int):
            raise ZygoteError(f"the zygote answered {answer!r}")
        return pid, started

    def _read(self, timeout_s: float) -> dict[str, object]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ZygoteError(f"no answer from the zygote in {timeout_s:.0f}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ZygoteError(f"the zygote exited ({self.proc.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ZygoteError(f"the zygote said {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise ZygoteError(f"the zygote said {message!r}")
        return message

    def close(self) -> None:
        """End its input: it exits (the nodes it started run on)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
