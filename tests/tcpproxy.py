"""A TCP relay in front of a real server that can stop relaying (a server that times out).

While paused it still accepts connections but moves no byte either way, so a
client's requests, TLS handshakes included, hang until the client's own
timeout: what an overloaded or partitioned Kubernetes API server looks like
from a pod. It listens on a loopback address only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator


class PausableProxy:
    def __init__(self, host: str, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server((host, 0))
        self.host, self.port = host, self.listener.getsockname()[1]
        self.paused = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()

    def start(self) -> None:
        self._thread(self._accept)

    def close(self) -> None:
        self.closed.set()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self.threads:
            thread.join(timeout=5)

    def _thread(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
            self._thread(self._pump, client, upstream)
            self._thread(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def pausable_proxy(host: str, target_host: str, target_port: int) -> Iterator[PausableProxy]:
    proxy = PausableProxy(host, target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
