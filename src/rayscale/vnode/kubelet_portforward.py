"""``POST /portForward/{ns}/{pod}``: TCP to the pod's address, over SPDY.

For each forwarded connection the client opens an ``error`` and a ``data``
stream with the same ``requestid`` and ``port``; data is copied both ways to
``<pod IP>:<port>`` (pods bind their own loopback address). The error stream
carries a failure as text and is closed when the connection ends: kubectl
waits for that.
"""

from __future__ import annotations

import asyncio
import contextlib

from rayscale.vnode.spdy import Session, Stream

PROTOCOL = "portforward.k8s.io"


async def serve_portforward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            pod_ip: str, pod_name: str) -> None:
    pairs: dict[str, dict[str, Stream]] = {}
    tasks: set[asyncio.Task[None]] = set()

    def on_stream(stream: Stream) -> None:
        kind = stream.header("streamtype")
        if kind not in ("error", "data"):
            stream.session.reset(stream.id)
            return
        request = stream.header("requestid")
        if not request:  # old clients: pair by stream id (error = data - 2)
            request = str(stream.id if kind == "error" else stream.id - 2)
        pair = pairs.setdefault(request, {})
        pair[kind] = stream
        if len(pair) == 2:
            del pairs[request]
            task = asyncio.create_task(_forward(pair["data"], pair["error"], pod_ip, pod_name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    session = Session(reader, writer, on_stream)
    try:
        await session.serve()
    finally:
        for task in list(tasks):
            task.cancel()


async def _forward(data: Stream, error: Stream, pod_ip: str, pod_name: str) -> None:
    try:
        port = int(data.header("port"))
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        await error.write(f"invalid port {data.header('port')!r}".encode())
        error.close()
        data.close()
        return
    try:
        upstream_r, upstream_w = await asyncio.open_connection(pod_ip, port)
    except OSError as e:
        await error.write(f"error forwarding port {port} to pod {pod_name}: "
                          f"failed to connect to {pod_ip}:{port}: {e.strerror or e}".encode())
        error.close()
        data.close()
        return

    async def up() -> None:
        while (chunk := await data.read()) is not None:
            upstream_w.write(chunk)
            await upstream_w.drain()
        with contextlib.suppress(OSError):
            upstream_w.write_eof()

    async def down() -> None:
        while chunk := await upstream_r.read(65536):
            await data.write(chunk)
        data.close()

    try:
        await asyncio.gather(up(), down())
    except (ConnectionError, OSError):
        pass
    finally:
        upstream_w.close()
        data.close()
        error.close()
        await data.session.drain()
