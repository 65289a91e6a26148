"""``POST /exec/{ns}/{pod}/{container}``: a command in a running container, over SPDY.

The command runs as the container does: ``nsenter`` into the mount and UTS
namespaces of the container's main process (so its hosts file, volume mounts
and hostname apply), in its working directory, with its environment (read
from ``/proc/<pid>/environ``, which also carries the container's marker, so
the pod's termination stops exec'd processes too). With a TTY it gets a pty
sized by the client's resize stream. The exit status goes back on the error
stream as the kubelet's v4 protocol writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import termios
from pathlib import Path

from rayscale.vnode.spdy import Session, Stream

PROTOCOLS = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
STREAMS_TIMEOUT_S = 30.0
FIRST_RESIZE_WAIT_S = 1.0


def container_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def exec_argv(pid: int, command: list[str]) -> list[str]:
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    return [nsenter, f"--target={pid}", "--mount", "--uts", "--wd", "--", *command]


def status_json(code: int | None, error: str | None = None) -> bytes:
    if error is not None:
        return json.dumps({"metadata": {}, "status": "Failure", "reason": "InternalError",
                           "message": error, "code": 500}).encode()
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    code = 128 - code if code is not None and code < 0 else (code or 0)
    return json.dumps({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code & 0xFF)}]},
    }).encode()


async def serve_exec(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int,
                     command: list[str], stdin: bool, stdout: bool, stderr: bool,
                     tty: bool) -> None:
    """Run after the 101: collect the client's streams, run, report, close."""
    wanted = 1 + stdin + stdout + (stderr and not tty) + tty
    streams: dict[str, Stream] = {}
    ready = asyncio.Event()

    def on_stream(stream: Stream) -> None:
        streams[stream.header("streamtype")] = stream
        if len(streams) >= wanted:
            ready.set()

    session = Session(reader, writer, on_stream)
    serving = asyncio.create_task(session.serve())
    try:
        await asyncio.wait_for(ready.wait(), STREAMS_TIMEOUT_S)
    except TimeoutError:
        serving.cancel()
        return
    error = streams["error"]
    try:
        argv = exec_argv(pid, command)
        env = container_env(pid)
        if tty:
            code = await _run_tty(argv, env, streams)
        else:
            code = await _run_pipes(argv, env, streams)
        await error.write(status_json(code))
    except OSError as e:
        await error.write(status_json(None, f"exec in container failed: {e}"))
    finally:
        for stream in streams.values():
            stream.close()
        session.goaway()
        await session.drain()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _copy_stdin(stream: Stream | None, write: asyncio.StreamWriter | int) -> None:
    """Client stdin to the process; its EOF (FIN) closes the process's stdin."""
    if stream is None:
        return
    while (data := await stream.read()) is not None:
        if isinstance(write, int):
            await _write_fd(write, data)
        else:
            write.write(data)
            await write.drain()
    if not isinstance(write, int):
        write.close()


async def _write_fd(fd: int, data: bytes) -> None:
    """All of ``data`` to a non-blocking pty master."""
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            await asyncio.sleep(0.01)


async def _run_pipes(argv: list[str], env: dict[str, str], streams: dict[str, Stream]) -> int:
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=pipe if "stdin" in streams else asyncio.subprocess.DEVNULL,
        stdout=pipe, stderr=pipe, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None

    async def copy(source: asyncio.StreamReader, name: str) -> None:
        while data := await source.read(65536):
            if name in streams:
                await streams[name].write(data)

    feeder = None
    if proc.stdin is not None:
        feeder = asyncio.create_task(_copy_stdin(streams.get("stdin"), proc.stdin))
    copying = asyncio.gather(copy(proc.stdout, "stdout"), copy(proc.stderr, "stderr"))
    try:
        code = await _wait_or_hang_up(proc, streams["error"].session.closed)
        if streams["error"].session.closed.is_set():
            copying.cancel()
        else:
            await copying
        return code
    finally:
        if feeder is not None:
            feeder.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


async def _wait_or_hang_up(proc: asyncio.subprocess.Process, closed: asyncio.Event) -> int:
    """The exit code; if the client goes away first, SIGHUP the command (SIGKILL 2 s on)."""
    waiter = asyncio.ensure_future(proc.wait())
    closer = asyncio.ensure_future(closed.wait())
    done, _ = await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
    closer.cancel()
    if waiter in done:
        return waiter.result()
    for sig in (signal.SIGHUP, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(waiter), 2.0)
    return await waiter


def _set_size(fd: int, line: bytes) -> None:
    try:
        size = json.loads(line)
        fcntl.ioctl(fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
    except (ValueError, KeyError, TypeError, OSError):
        pass


async def _resizes(stream: Stream, fd: int, first: asyncio.Event) -> None:
    buf = b""
    while (data := await stream.read()) is not None:
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            _set_size(fd, line)
            first.set()
    first.set()


def _make_controlling() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _run_tty(argv: list[str], env: dict[str, str], streams: dict[str, Stream]) -> int:
    master, slave = pty.openpty()
    first_size = asyncio.Event()
    resizer = asyncio.create_task(_resizes(streams["resize"], master, first_size))
    with contextlib.suppress(TimeoutError):  # else `stty size` could read 0 0
        await asyncio.wait_for(first_size.wait(), FIRST_RESIZE_WAIT_S)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env={"TERM": "xterm", **env}, stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, preexec_fn=_make_controlling)
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    out = streams.get("stdout")
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    os.set_blocking(master, False)

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the pty's other end has gone
            data = b""
        if not data:
            loop.remove_reader(master)
        chunks.put_nowait(data)

    async def copy_out() -> None:
        while data := await chunks.get():
            if out is not None:
                await out.write(data)

    loop.add_reader(master, readable)
    copier = asyncio.create_task(copy_out())
    feeder = asyncio.create_task(_copy_stdin(streams.get("stdin"), master))
    try:
        code = await _wait_or_hang_up(proc, streams["error"].session.closed)
        # what is left in the pty; background children may keep it open: bounded
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(copier), 2.0)
        return code
    finally:
        for task in (copier, feeder, resizer):
            task.cancel()
        loop.remove_reader(master)
        os.close(master)
