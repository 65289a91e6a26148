"""A real ``redis-server`` for the GCS fault tolerance tests (Debian's package).

:func:`redis_server` starts one on a loopback address and a free port, with a
password and without persistence, in a process group of its own, and stops
exactly that process when the test is done (also on failure). :class:`Redis`
talks to it with ``redis-cli`` (argument lists; the password goes through
``REDISCLI_AUTH``, never the command line).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rayscale.ports import free_port
from tests.childproc import stop_child

REDIS_HOST = "127.0.0.9"  # not 127.0.0.1: Ray rewrites that to the outward IP


@dataclass(frozen=True)
class Redis:
    """A running redis-server: where it listens and its password."""

    host: str
    port: int
    password: str
    pid: int

    @property
    def address(self) -> str:
        """``host:port``, the form of ``redisAddress`` and ``RAY_REDIS_ADDRESS``."""
        return f"{self.host}:{self.port}"

    def cli(self, *args: str, password: str | None = None) -> str:
        """Run one ``redis-cli`` command and return its output (stripped)."""
        env = {**os.environ, "REDISCLI_AUTH": self.password if password is None else password}
        done = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), "--no-auth-warning", *args],
            env=env, capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout.strip()

    def keys(self, pattern: str = "*") -> list[str]:
        """Every key matching ``pattern`` (a SCAN, not KEYS)."""
        out = self.cli("--scan", "--pattern", pattern)
        return [line for line in out.splitlines() if line]

    def dbsize(self) -> int:
        """How many keys the server holds."""
        return int(self.cli("DBSIZE"))


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH (scripts/install.sh installs it when missing)."""
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: run scripts/install.sh")
    return found


@contextlib.contextmanager
def redis_server(
    workdir: Path, password: str = "5241590000000000", host: str = REDIS_HOST,
) -> Iterator[Redis]:
    """A redis-server on ``host`` and a free port, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        redis_server_binary(), "--bind", host, "--port", str(port),
        "--requirepass", password, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--protected-mode", "yes", "--daemonize", "no",
    ]
    log = (workdir / "redis.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    server = Redis(host=host, port=port, password=password, pid=proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(subprocess.SubprocessError):
                if server.cli("PING") == "PONG":
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (workdir / "redis.log").read_text()
                raise RuntimeError(f"redis-server did not start: {log_text}")
            time.sleep(0.05)
        yield server
    finally:
        stop_child(proc)  # our unreaped child: its PID cannot have been reused
