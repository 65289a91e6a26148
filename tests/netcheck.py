"""What processes listen on and where they connect: helpers for the network tests.

- :func:`listeners` lists the listening TCP sockets and the bound, unconnected
  UDP sockets that a set of processes holds, from ``/proc/PID/net/{tcp,tcp6,
  udp,udp6}`` (read per network namespace) and the socket inodes in
  ``/proc/PID/fd``.
- :func:`traced_destinations` reads an ``strace -f -ff -e trace=connect,sendto,
  sendmsg,sendmmsg`` output and returns every IPv4/IPv6 address a process
  connected to or sent a datagram to. Unix and netlink sockets are not network
  traffic and are left out.
- :func:`loopback_only` tells whether this process's network namespace has
  no interface but ``lo`` (scripts/loopback-only.sh), where an attempt to
  reach another address fails at once and leaves the machine never.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"
STRACE = "/usr/bin/strace"
TRACED_CALLS = "connect,sendto,sendmsg,sendmmsg,execve"


@dataclass(frozen=True)
class Listener:
    proto: str  # tcp, tcp6, udp, udp6
    ip: str
    port: int
    inode: int
    pids: tuple[int, ...]

    @property
    def loopback(self) -> bool:
        addr = ipaddress.ip_address(self.ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_loopback

    @property
    def wildcard(self) -> bool:
        return ipaddress.ip_address(self.ip).is_unspecified

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.proto} {host}:{self.port} (pids {', '.join(map(str, self.pids))})"


def _hex_ip(raw: str) -> str:
    """An address from /proc/net/*: 32-bit words in host (little-endian) byte order."""
    data = bytes.fromhex(raw)
    swapped = b"".join(data[i:i + 4][::-1] for i in range(0, len(data), 4))
    return str(ipaddress.ip_address(swapped))


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
    return out


def _net_ns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def listeners(pids: Iterable[int]) -> list[Listener]:
    """Listening TCP and bound, unconnected UDP sockets held by ``pids``."""
    owners: dict[int, list[int]] = {}
    namespaces: dict[int, int] = {}  # netns inode -> one pid in it
    for pid in sorted(set(pids)):
        for inode in _socket_inodes(pid):
            owners.setdefault(inode, []).append(pid)
        ns = _net_ns(pid)
        if ns is not None:
            namespaces.setdefault(ns, pid)
    found: dict[tuple[str, int], Listener] = {}
    for pid in namespaces.values():
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            try:
                lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
                if inode not in owners:
                    continue
                if proto.startswith("tcp") and state != TCP_LISTEN:
                    continue
                if proto.startswith("udp") and (state != UDP_UNCONNECTED
                                                or int(remote.split(":")[1], 16) != 0):
                    continue
                ip_hex, port_hex = local.split(":")
                found[(proto, inode)] = Listener(proto, _hex_ip(ip_hex), int(port_hex, 16),
                                                 inode, tuple(owners[inode]))
    return sorted(found.values(), key=lambda s: (s.proto, s.ip, s.port))


def descendants(roots: Iterable[int]) -> set[int]:
    """``roots`` and every live process below them (by parent PID)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children.get(pid, [])
    return out


def loopback_only() -> bool:
    """True when this network namespace has no interface but ``lo``."""
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


# --- strace -------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    pid: int
    call: str
    family: str  # AF_INET or AF_INET6
    ip: str
    port: int
    result: str  # "= 0", "= -1 ENETUNREACH (...)", ...

    @property
    def loopback(self) -> bool:
        addr = ipaddress.ip_address(self.ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_loopback

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.call} {self.ip}:{self.port} {self.result}"


def strace_argv(out_prefix: Path) -> list[str]:
    """strace in front of a command: every socket call that names a destination, one
    output file per process (``out_prefix.PID``, no interleaved lines), no payloads."""
    return [STRACE, "-f", "-ff", "-qq", "-s", "0", "-e", f"trace={TRACED_CALLS}",
            "-o", str(out_prefix)]


_CALL = re.compile(r"^(?:\d+ )?(connect|sendto|sendmsg|sendmmsg)\((.*)$")
_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\),.*?'
                    r'inet_pton\(AF_INET6, "([^"]+)"')
_RESULT = re.compile(r"\) += (.*)$")


def traced_destinations(out_prefix: Path) -> list[Destination]:
    """Every IPv4/IPv6 destination in the trace files ``out_prefix.PID``.

    A ``sendto``/``sendmsg`` on a connected socket names no address (its
    ``connect`` was recorded); one that names an address is a datagram to it.
    """
    found = []
    for path in sorted(out_prefix.parent.glob(out_prefix.name + ".*")):
        pid = int(path.suffix[1:])
        for line in path.read_text(errors="replace").splitlines():
            m = _CALL.match(line)
            if m is None:
                continue
            call, rest = m.groups()
            result = _RESULT.search(rest)
            outcome = result.group(1) if result else "(unfinished)"
            for regex, family in ((_INET, "AF_INET"), (_INET6, "AF_INET6")):
                for port, ip in regex.findall(rest):
                    found.append(Destination(pid, call, family, ip, int(port), outcome))
    return found
