"""Stopping a server process a test started (and has not reaped: its PID is still ours)."""

from __future__ import annotations

import subprocess


def stop_child(proc: subprocess.Popen[str] | subprocess.Popen[bytes],
               grace_s: float = 10.0) -> None:
    """SIGTERM, up to ``grace_s`` to exit, then SIGKILL; always reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
