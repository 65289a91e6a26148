"""Processes we start: spawned in their own session, found again, stopped by group.

Every process rayscale starts carries an environment marker
(``RAYSCALE_CLUSTER_ID``) that Ray passes on to everything it spawns (raylet,
workers, agents). That lets ``down`` find and stop exactly what one cluster
started, and nothing else, even after a crash lost a PID: never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

MARKER = "RAYSCALE_CLUSTER_ID"
# How long an exec may take to show its command line (it is microseconds unless the
# machine is loaded; seen: 20 ms with two busy cores).
EXEC_WAIT_S = 5.0
_PF_KTHREAD = 0x00200000  # /proc/PID/stat flags: a kernel thread (no command line ever)


def spawn(
    argv: Sequence[str], env: Mapping[str, str], log: Path | int, cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a list, never a shell string) in a new session, output to ``log``.

    ``log`` is a file (appended to) or an open descriptor, which is closed here.

    Returns once the child's exec has finished (its ``/proc/PID/cmdline`` is
    ``argv``) or the child has exited, so a check right after the start sees the
    new program, not an exec still under way (see :func:`is_alive`).
    ``pass_fds`` stay open in the child (e.g. a lock it must hold while it lives).
    """
    if isinstance(log, int):
        fd = log
    else:
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # logs may hold what a process printed about its cluster: the owner's only
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
    deadline = time.monotonic() + EXEC_WAIT_S
    while not cmdline(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return proc


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def environ_value(pid: int, name: str) -> str | None:
    """The value of ``name`` in a process's environment (as it started), if set."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def environ_marker(pid: int) -> str | None:
    """The cluster marker in a process's environment, if it has one."""
    return environ_value(pid, MARKER)


def marked(name: str) -> Iterator[tuple[int, str]]:
    """(pid, value) of every other live process whose environment sets ``name``."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            value = environ_value(int(entry.name), name)
            if value is not None and is_alive(int(entry.name)):
                yield int(entry.name), value


def is_alive(pid: int, expect_arg: str | None = None) -> bool:
    """Alive, not a zombie, and (when given an argument it must have) still ours.

    The argument check guards against PID reuse; it compares whole arguments,
    so ``node=small-3`` does not match ``node=small-30``.

    A live process with an empty command line is in the middle of an exec (or of
    its exit): the kernel installs the new program's memory, and wakes a parent
    waiting in ``Popen``, before it sets the command line. Under load that takes
    milliseconds, and a check in that window must not call the process dead (or
    not ours): it waits for the exec (or exit) to finish, up to ``EXEC_WAIT_S``.
    """
    if pid <= 0:
        return False
    if expect_arg is None:
        return _live_stat(pid) is not None
    deadline = time.monotonic() + EXEC_WAIT_S
    while True:
        fields = _live_stat(pid)
        if fields is None:
            return False
        args = cmdline(pid)
        if args or int(fields[6]) & _PF_KTHREAD or time.monotonic() > deadline:
            return expect_arg in args
        time.sleep(0.001)


def runs_with(pid: int, identity: Sequence[str]) -> bool:
    """Alive and still the process we started: every identity argument is on its command
    line (a reused PID runs something else)."""
    if not identity or not is_alive(pid, identity[0]):
        return False
    args = cmdline(pid)
    return all(a in args for a in identity)


def _live_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name; None if gone or a zombie
    (which is reaped if it is our child)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] in ("Z", "X"):
        if not _gone(pid, fields[0]):
            return fields  # its threads are still exiting
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields


def pids_with_marker(marker: str) -> list[int]:
    """Every live process whose environment carries this cluster's marker."""
    return [pid for pid, value in marked(MARKER) if value == marker]


def stop_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM a process group, then SIGKILL its members left after ``grace_s``.

    PIDs are reused quickly (pid_max may be 32768): the SIGKILL goes only to
    members that already existed when the stop began, never to a process that
    took the number (or the group id) since.
    """
    began = {pid: start_time(pid) for pid in _group_members(pgid)}
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(True for _ in _group_members(pgid)):
            return
        time.sleep(0.1)
    left = [pid for pid in _group_members(pgid)
            if pid in began and start_time(pid) == began[pid]]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(left, 5.0)


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid``.

    rayscale starts every node in a session of its own (``spawn``), and Ray's
    processes stay in it: a record Ray cannot rewrite (it rewrites process
    titles and, with them, the environment that holds our marker). Linux never
    reuses a PID while a process group or session of that id has members, so
    members of a recorded session whose leader is gone are that node's orphans.
    """
    return list(_members(3, sid))


def stop_session(sid: int, grace_s: float = 10.0) -> list[int]:
    """SIGTERM every member of a session, SIGKILL the ones left after ``grace_s``."""
    members = session_members(sid)
    stop_pids(members, grace_s)
    return members


def stop_pids(pids: Sequence[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, a set of single processes (the sweep after groups).

    Like :func:`stop_group`, the SIGKILL spares a process that reused a PID.
    """
    began = {pid: start_time(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    left = [pid for pid in _wait_gone(pids, grace_s) if start_time(pid) == began[pid]]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(left, 5.0)


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): a reused PID has another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[19])


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_members(pgid: int) -> Iterator[int]:
    return _members(2, pgid)


def stat_fields() -> Iterator[tuple[int, list[str]]]:
    """Every process as ``(pid, fields of /proc/PID/stat after the command name)``:
    0 state, 1 ppid, 2 pgrp, 3 session, ..."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat.rsplit(")", 1)[-1].split()


def _members(field: int, value: int) -> Iterator[int]:
    """PIDs whose stat field (after state: 1 ppid, 2 pgrp, 3 session) is ``value``."""
    for pid, fields in stat_fields():
        if int(fields[field]) == value and not _gone(pid, fields[0]):
            yield pid


def _gone(pid: int, state: str) -> bool:
    """Exited: a zombie (or dead) whose threads have all exited too.

    A multi-threaded process whose main thread exits first shows "Z" while its
    other threads still run their exit (etcd flushing, say): it cannot be
    reaped yet and may still hold files and locks, so it is not gone.
    """
    if state not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def _wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if is_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if is_alive(p)]
    return left
