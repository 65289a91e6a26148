"""Free ports: one process never hands out the same port twice, nor one it was told is taken."""

from __future__ import annotations

import socket

from rayscale import ports


def test_a_port_handed_out_is_not_handed_out_again_even_while_unbound() -> None:
    # the probe socket is closed at once, so the kernel is free to pick the
    # same number for the next probe: the cause of Ray's "port ... used by
    # other components" when a node's ports were picked one at a time
    picked = [ports.free_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)


def test_a_reserved_port_is_never_handed_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    ports.reserve(port, None)
    assert all(ports.free_port() != port for _ in range(200))
