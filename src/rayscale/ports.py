"""Free TCP ports for the servers rayscale starts (Ray, the dev control plane).

A probe binds port 0 briefly and never listens: the kernel picks a port that
is free at that moment. Callers bind soon after and retry if another process
took it in between.
"""

from __future__ import annotations

import socket
from collections import deque

# Ports this process handed out or was told are taken. A port picked but not
# bound yet is free again to the kernel, which may well pick it for the next
# probe: two of one node's servers then get the same port and Ray refuses to
# start ("trying to use a port number ... that is used by other components").
_TAKEN: deque[int] = deque(maxlen=1024)


def reserve(*ports: int | None) -> None:
    """Never hand out ``ports`` from :func:`free_port` (ports a record already names)."""
    _TAKEN.extend(port for port in ports if port)


def free_port() -> int:
    """A port free on every address, not only on one loopback IP, and new to this process.

    Ray binds some of its servers (the GCS among them) to all addresses, so a
    port that is free on a node's loopback IP but bound on another loopback IP
    would still make it fail.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            port: int = sock.getsockname()[1]
        if port not in _TAKEN:
            _TAKEN.append(port)
            return port


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` now (a liveness hint)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
