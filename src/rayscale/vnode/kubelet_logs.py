"""``GET /containerLogs/{ns}/{pod}/{container}``: the kubelet's log options over our files.

Semantics follow the kubelet's (cri-client ``logs.NewLogOptions``): since =
the later of ``sinceSeconds`` and ``sinceTime``; ``tailLines`` applies before
``follow``; ``limitBytes`` caps the whole answer. ``previous`` is the
instance before the latest one. A followed log ends when that instance has
stopped (its process gone or a newer instance started) and all it wrote was sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from rayscale.vnode import logs
from rayscale.vnode.kubelet_http import BadRequest, Lookup, PodView, Request

FOLLOW_POLL_S = 0.2


def _since(request: Request) -> dt.datetime | None:
    out: dt.datetime | None = None
    try:
        if "sinceSeconds" in request.query:
            out = dt.datetime.now(dt.UTC) - dt.timedelta(
                seconds=int(request.query["sinceSeconds"][0]))
        if "sinceTime" in request.query:
            at = dt.datetime.fromisoformat(request.query["sinceTime"][0].replace("Z", "+00:00"))
            out = at if out is None else max(out, at)
    except ValueError as e:
        raise BadRequest(f"bad since: {e}") from e
    return out


def _int(request: Request, name: str) -> int | None:
    if name not in request.query:
        return None
    try:
        value = int(request.query[name][0])
    except ValueError as e:
        raise BadRequest(f"{name} must be an integer") from e
    if value < 0:
        raise BadRequest(f"{name} must not be negative")
    return value


class LogAnswer:
    """Chunks of a chunked HTTP body, with the byte limit applied."""

    def __init__(self, writer: asyncio.StreamWriter, limit: int | None,
                 timestamps: bool) -> None:
        self.writer, self.left, self.timestamps = writer, limit, timestamps

    @property
    def full(self) -> bool:
        return self.left is not None and self.left <= 0

    async def send(self, records: list[logs.Record]) -> None:
        data = b"".join((r.stamp.encode() + b" " if self.timestamps else b"") + r.text
                        for r in records)
        if self.left is not None:
            data = data[:self.left]
            self.left -= len(data)
        if data:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()


def _pick(pod: PodView, container: str, previous: bool) -> int:
    found = logs.instances(pod.directory, container)
    if previous:
        if len(found) < 2:
            raise BadRequest(f'previous terminated container "{container}" in pod '
                              f'"{pod.name}" not found')
        return found[-2]
    if not found:
        raise BadRequest(f'container "{container}" in pod "{pod.name}" is waiting to start: '
                         "ContainerCreating")
    return found[-1]


def _still_writing(lookup: Lookup, pod: PodView, container: str, instance: int) -> bool:
    now = lookup(pod.namespace, pod.name)
    view = now.containers.get(container) if now is not None else None
    return view is not None and view.pid is not None and view.restart_count == instance


async def serve_logs(writer: asyncio.StreamWriter, request: Request, pod: PodView,
                     container: str, lookup: Lookup) -> None:
    since = _since(request)
    tail = _int(request, "tailLines")
    limit = _int(request, "limitBytes")
    follow = request.flag("follow")
    instance = _pick(pod, container, request.flag("previous"))
    path = logs.instance_file(pod.directory, container, instance)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    answer = LogAnswer(writer, limit, request.flag("timestamps"))
    offset, records = _read(path, 0)
    if since is not None:
        records = [r for r in records if r.at >= since]
    if tail is not None:
        records = records[-tail:] if tail else []
    await answer.send(records)
    while follow and not answer.full:
        writing = _still_writing(lookup, pod, container, instance)
        await asyncio.sleep(FOLLOW_POLL_S)
        offset, records = _read(path, offset)
        await answer.send(records)
        if not writing and not records:
            break
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def _read(path: Path, offset: int) -> tuple[int, list[logs.Record]]:
    """Whole records from ``offset`` on; returns the offset after the last one."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset, []
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        record = logs.parse(line)
        if record is not None:
            out.append(record)
    return offset + end, out
