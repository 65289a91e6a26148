"""Process control with real processes: groups, PID-reuse guard, the marker sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayscale import procs


def test_stop_group_stops_the_whole_group_and_the_marker_finds_it(tmp_path: Path) -> None:
    marker = f"test-{os.getpid()}"
    env = {**os.environ, procs.MARKER: marker}
    # a parent that starts a child in the same group, both long-running
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)"
    )
    proc = procs.spawn([sys.executable, "-c", code], env, tmp_path / "log")
    try:
        found = []
        for _ in range(50):
            found = procs.pids_with_marker(marker)
            if len(found) == 2:
                break
            import time
            time.sleep(0.1)
        assert len(found) == 2 and proc.pid in found
        assert os.getpgid(proc.pid) == proc.pid  # its own session and group
        procs.stop_group(proc.pid, grace_s=5)
        proc.wait(timeout=5)
        assert procs.pids_with_marker(marker) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_is_alive_checks_a_whole_argument(tmp_path: Path) -> None:
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)", "--labels=x=small-3"],
                       dict(os.environ), tmp_path / "log")
    try:
        assert procs.is_alive(proc.pid, "--labels=x=small-3")
        assert not procs.is_alive(proc.pid, "--labels=x=small-30")
        assert not procs.is_alive(proc.pid, "--labels=x=small-")
    finally:
        proc.kill()
        proc.wait()
    assert not procs.is_alive(proc.pid)


def test_a_member_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = procs.spawn([sys.executable, "-c", code], dict(os.environ), tmp_path / "log")
    try:
        import time

        time.sleep(0.5)  # let it install the handler
        started = time.monotonic()
        procs.stop_group(proc.pid, grace_s=1)
        assert time.monotonic() - started >= 1  # SIGTERM was ignored for the whole grace
        proc.wait(timeout=5)
        assert not procs.is_alive(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()


def _popen_like_spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """What ``procs.spawn`` runs, without its wait for the exec to finish."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)


def test_is_alive_right_after_popen_returns_sees_the_new_program() -> None:
    # Popen returns once the child's exec is past its point of no return, before the
    # kernel has set the new command line: the check used to call such a process dead
    # (the dev cluster's "etcd exited during start", with etcd running on, orphaned).
    for i in range(40):
        arg = f"--ident={i}"
        proc = _popen_like_spawn([sys.executable, "-c", "import time; time.sleep(30)", arg])
        try:
            assert procs.is_alive(proc.pid, arg), (i, procs.cmdline(proc.pid))
            assert not procs.is_alive(proc.pid, f"--ident={i}0")
        finally:
            proc.kill()
            proc.wait()
        assert not procs.is_alive(proc.pid, arg)


def test_spawn_returns_after_the_exec(tmp_path: Path) -> None:
    for i in range(40):
        argv = [sys.executable, "-c", "import time; time.sleep(30)", f"--ident={i}"]
        proc = procs.spawn(argv, dict(os.environ), tmp_path / "log")
        try:
            assert procs.cmdline(proc.pid) == argv
        finally:
            proc.kill()
            proc.wait()
    # a program that exits at once does not hold spawn up
    proc = procs.spawn(["/bin/true"], dict(os.environ), tmp_path / "log")
    assert proc.wait(timeout=5) == 0


def test_is_alive_waits_out_an_exec_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: a live process whose command line reads empty (mid-exec) for a while."""
    proc = _popen_like_spawn([sys.executable, "-c", "import time; time.sleep(30)", "--me"])
    try:
        real, reads = procs.cmdline, []

        def slow_exec(pid: int) -> list[str]:
            reads.append(pid)
            return [] if len(reads) <= 5 else real(pid)

        monkeypatch.setattr(procs, "cmdline", slow_exec)
        assert procs.is_alive(proc.pid, "--me")
        assert len(reads) == 6
        # a kernel thread (PID 2, kthreadd) never gets a command line: no wait for it
        reads.clear()
        started = time.monotonic()
        assert not procs.is_alive(2, "--me")
        assert time.monotonic() - started < 1
    finally:
        proc.kill()
        proc.wait()
