"""Container logs: what a container prints, kept as the kubelet API serves it.

Each container's stdout and stderr (one pipe, merged as before) are read by a
thread of the vnode and written twice:

* ``<pod dir>/<container>.log``: the raw bytes, appended across restarts (what
  people and tests ``tail``);
* ``<pod dir>/logs/<container>/<restart>.log``: one file per container instance
  in the CRI log format, ``<RFC3339Nano> stdout <F|P> <text>`` per line (``P``: a
  partial line, continued by the next record), which ``kubectl logs`` reads
  with ``--previous``, ``--since``, ``--timestamps``.

The thread ends when every process holding the pipe has closed it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def instance_dir(pod_dir: Path, container: str) -> Path:
    return pod_dir / "logs" / container


def instance_file(pod_dir: Path, container: str, restart: int) -> Path:
    return instance_dir(pod_dir, container) / f"{restart}.log"


def stamp(ns: int) -> str:
    """``2006-01-02T15:04:05.000000000Z``, the kubelet's timestamp format."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def capture(pod_dir: Path, container: str, restart: int) -> int:
    """A pipe's write end for a new container instance; a thread records what arrives."""
    raw_path = pod_dir / f"{container}.log"
    stamped = instance_file(pod_dir, container, restart)
    stamped.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    raw = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = os.open(stamped, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    read_end, write_end = os.pipe()
    threading.Thread(target=_pump, args=(read_end, raw, out), daemon=True,
                     name=f"log-{container}").start()
    return write_end


def _pump(read_end: int, raw: int, out: int) -> None:
    try:
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                return
            os.write(raw, chunk)
            now = stamp(time.time_ns()).encode()
            lines = chunk.split(b"\n")
            records = [now + b" stdout F " + line + b"\n" for line in lines[:-1]]
            if lines[-1]:
                records.append(now + b" stdout P " + lines[-1] + b"\n")
            os.write(out, b"".join(records))
    except OSError:
        return
    finally:
        for fd in (read_end, raw, out):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True)
class Record:
    at: dt.datetime
    stamp: str
    text: bytes  # with its newline unless partial


def parse(line: bytes) -> Record | None:
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    text = parts[3] if len(parts) == 4 else b""
    ts = parts[0].decode(errors="replace")
    try:
        at = dt.datetime.fromisoformat(ts[:26] + "+00:00") if ts.endswith("Z") else None
    except ValueError:
        at = None
    if at is None:
        return None
    return Record(at, ts, text + (b"" if parts[2] == b"P" else b"\n"))


def instances(pod_dir: Path, container: str) -> list[int]:
    """Restart numbers that have a log file, oldest first."""
    found = []
    for path in instance_dir(pod_dir, container).glob("*.log"):
        with contextlib.suppress(ValueError):
            found.append(int(path.stem))
    return sorted(found)
