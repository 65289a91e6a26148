"""Reading log files the way `rayscale logs` shows them: durations, line times, tails.

Stdlib only (the bottom floor): the local and the Kubernetes halves of
`rayscale logs` share the ``--since`` parser and the line prefixing, and the
local half reads files with :class:`FileTail`.

A line's time is the timestamp it starts with (Ray's ``2026-11-29
06:18:40,455``, Python logging's, the raylet's ``[2026-11-29 06:18:42,900
I ...]``, RFC 3339), read as this machine's local time unless it names a zone;
a line without one (a job's own output, a traceback) was written between the
timestamped lines around it (:class:`SinceWindow`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path

#: How often a followed file is looked at again (as the vnode's kubelet does).
FOLLOW_POLL_S = 0.2

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``, ``2.5s`` → seconds (> 0).

    ValueError, saying what is expected, for anything else (a bare number too:
    ``5`` could mean seconds or minutes).
    """
    value = text.strip().lower()
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f"expected a duration such as 30s, 5m, 2h or 1h30m, got {text!r}")
    if total <= 0:
        raise ValueError(f"the duration must be more than zero, got {text!r}")
    return total


_STAMP = re.compile(
    rb"^\[?(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    rb"(Z|[+-]\d\d:?\d\d)?"
)


def line_time(line: bytes) -> float | None:
    """The epoch seconds of the timestamp ``line`` starts with, or None."""
    match = _STAMP.match(line)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(x) for x in match.groups()[:6])
    fraction = match.group(7) or b"0"
    micros = int((fraction + b"000000")[:6])
    zone = match.group(8)
    tz: dt.tzinfo | None = None
    if zone == b"Z":
        tz = dt.UTC
    elif zone is not None:
        text = zone.decode().replace(":", "")
        offset = dt.timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
        tz = dt.timezone(offset if text[0] == "+" else -offset)
    try:
        at = dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError:  # 2026-13-45: not a timestamp after all
        return None
    return at.timestamp()  # a naive datetime is local time


class SinceWindow:
    """Keeps the lines of one file written at or after ``since`` (epoch seconds; None:
    all of them), fed in order, in as many pieces as it takes.

    A line without a timestamp was written between the timestamped lines around
    it: it is dropped only when the next timestamped line is older than
    ``since`` (then it is old for sure), so a job's output under an old "job
    started" line is not lost. Untimed lines after the last timestamped one
    are kept when ``recent`` (the file was written to since then).
    """

    def __init__(self, since: float | None, recent: bool) -> None:
        self.since, self.recent = since, recent
        self._untimed: list[bytes] = []  # waiting for the next timestamped line

    def feed(self, lines: list[bytes], at_end: bool) -> list[bytes]:
        """The lines to show of ``lines``; ``at_end``: nothing follows them (yet)."""
        if self.since is None:
            everything, self._untimed = self._untimed + lines, []
            return everything
        out: list[bytes] = []
        for line in lines:
            stamp = line_time(line)
            if stamp is None:
                self._untimed.append(line)
                continue
            if stamp >= self.since:
                out += self._untimed
                out.append(line)
            self._untimed = []
        if at_end:
            out += self._untimed if self.recent else []
            self._untimed = []
        return out


def since_lines(lines: list[bytes], since: float | None, recent: bool) -> list[bytes]:
    """:class:`SinceWindow` over a whole file's ``lines`` at once."""
    return SinceWindow(since, recent).feed(lines, at_end=True)


#: a file is read this much at a time (a big raylet.out is not held in memory)
CHUNK_BYTES = 1 << 20


class FileTail:
    """A log file read in whole lines from where the last read stopped.

    A file that shrank was truncated or replaced: it is read again from the
    start. A last line without its newline is held back until it is complete
    (or :meth:`rest` is called, when the caller is done).
    """

    def __init__(self, path: Path, since: float | None = None) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""
        self._identity: tuple[int, int] | None = None
        recent = True  # written to since ``since``
        if since is not None:
            with contextlib.suppress(OSError):
                recent = path.stat().st_mtime >= since
        self.window = SinceWindow(since, recent)

    @property
    def since(self) -> float | None:
        return self.window.since

    @since.setter
    def since(self, value: float | None) -> None:
        """None: everything from here on is wanted (following: new lines are new)."""
        self.window.since = value

    def skip_all(self) -> bool:
        """True when ``--since`` rules out the whole file (not written since then)."""
        if self.since is None:
            return False
        try:
            return self.path.stat().st_mtime < self.since
        except OSError:
            return True

    def skip_to_end(self) -> None:
        """Read on from the file's current end (what is there now is not wanted)."""
        try:
            info = self.path.stat()
        except OSError:
            return
        self.offset, self._identity = info.st_size, (info.st_dev, info.st_ino)

    def chunks(self) -> Iterator[list[bytes]]:
        """The complete new lines (each with its newline), filtered by ``since``, a
        piece at a time up to the file's current end."""
        try:
            f = self.path.open("rb")
        except OSError:  # gone (or not there yet): nothing new
            return
        with f:
            info = os.fstat(f.fileno())
            identity = (info.st_dev, info.st_ino)
            if self._identity is not None and (
                    identity != self._identity or info.st_size < self.offset):
                self.offset, self._partial = 0, b""  # replaced or truncated
            self._identity = identity
            f.seek(self.offset)
            while True:
                data = f.read(CHUNK_BYTES)
                at_end = len(data) < CHUNK_BYTES
                self.offset += len(data)
                data = self._partial + data
                end = data.rfind(b"\n") + 1
                self._partial = data[end:]
                yield self.window.feed(data[:end].splitlines(keepends=True), at_end)
                if at_end:
                    return

    def read(self) -> list[bytes]:
        """:meth:`chunks`, all at once."""
        return [line for chunk in self.chunks() for line in chunk]

    def rest(self) -> list[bytes]:
        """The held-back last line (without a newline), as a line of its own."""
        line, self._partial = self._partial, b""
        return self.window.feed([line + b"\n"], at_end=True) if line else []


def prefixed(name: str, width: int, line: bytes) -> bytes:
    """``name | line``, names padded to ``width`` so the lines align."""
    return name.ljust(width).encode() + b" | " + line
