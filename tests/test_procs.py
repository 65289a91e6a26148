"""Process control with real processes: groups, PID-reuse guard, the marker sweep."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
