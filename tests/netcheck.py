"""What processes listen on and where they connect: helpers for the network tests.

- :func:`listeners` lists the listening TCP sockets and the bound, unconnected
  UDP sockets that a set of processes holds, from ``/proc/PID/net/{tcp,tcp6,
  udp,udp6}`` (read per network namespace) and the socket inodes in
  ``/proc/PID/fd``.
- :func:`traced_destinations` reads the output of :func:`strace_argv` (connect,
  sendto, sendmsg, sendmmsg; sockets decorated with ``-yy``) and returns every
  IPv4/IPv6 address a thread connected or sent to; :func:`leaves_machine` says
  which of them is traffic off the machine. Unix and netlink sockets are not
  network traffic and are left out.
- :func:`loopback_only` tells whether this process's network namespace has
  no interface but ``lo`` (scripts/loopback-only.sh), where an attempt to
  reach another address fails at once and leaves the machine never.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rayscale import procs

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"
STRACE = "/usr/bin/strace"
TRACED_CALLS = "connect,sendto,sendmsg,sendmmsg"


@dataclass(frozen=True)
class Listener:
    proto: str  # tcp, tcp6, udp, udp6
    ip: str
    port: int
    inode: int
    pids: tuple[int, ...]

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.ip)

    @property
    def wildcard(self) -> bool:
        return ipaddress.ip_address(self.ip).is_unspecified

    def __str__(self) -> str:
        addr = ipaddress.ip_address(self.ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            host = f"[::ffff:{addr.ipv4_mapped}]"
        else:
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
    for pid, fields in procs.stat_fields():
        children.setdefault(int(fields[1]), []).append(pid)
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children.get(pid, [])
    return out


def cluster_processes(marker: str) -> set[int]:
    """Every process of a local cluster: those carrying its environment marker, the
    members of their process groups and everything below them. (Ray's agents
    rename themselves with setproctitle, which overwrites the memory
    ``/proc/PID/environ`` reads, so their marker is not readable; they are in their
    raylet's process group and below it.)"""
    from rayscale import procs

    marked = set(procs.pids_with_marker(marker))
    groups = set()
    for pid in marked:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) in groups:
                    members.add(int(entry.name))
    return descendants(marked | members)


# --- is a listener token-protected? --------------------------------------------

# One harmless method of each of Ray's gRPC services, read-only ones first. Ray
# checks the token before it looks at the request, so an unauthenticated call is
# answered UNAUTHENTICATED and runs nothing; a service that does not exist on the
# port is UNIMPLEMENTED. The object manager has only Push and Pull: it comes last.
GRPC_PROBES = (
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",  # GCS
    "/ray.rpc.NodeManagerService/GetNodeStats",  # raylet
    "/ray.rpc.CoreWorkerService/NumPendingTasks",  # workers (and drivers)
    "/ray.rpc.LogService/ListLogs",  # dashboard agent
    "/ray.rpc.ObjectManagerService/Pull",  # raylet's object manager
)


def http_status(ip: str, port: int, path: str = "/api/version", timeout_s: float = 3.0
                ) -> int | None:
    """The HTTP status of an unauthenticated GET, or None if the port does not speak
    HTTP/1 (gRPC servers speak HTTP/2 only)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((ip, port))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            head = sock.recv(64)
        except OSError:
            return None
    if not head.startswith(b"HTTP/1."):
        return None
    return int(head.split()[1])


def grpc_unauthenticated_call(ip: str, port: int, timeout_s: float = 3.0
                              ) -> tuple[str, str] | None:
    """The first of :data:`GRPC_PROBES` the port serves, called without a token:
    (method, status code name); None if it serves none of them."""
    import grpc

    host = f"[{ip}]" if ":" in ip else ip
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in GRPC_PROBES:
            try:
                channel.unary_unary(method)(b"", timeout=timeout_s)
            except grpc.RpcError as exc:
                code = exc.code().name
                if code == "UNIMPLEMENTED":
                    continue
                return method, code
            return method, "OK"
    return None


def reachable_ip(listener: Listener) -> str:
    """An address to reach a listener at from here (a wildcard one answers on loopback)."""
    if listener.wildcard:
        return "::1" if listener.proto == "tcp6" and not _dual_stack() else "127.0.0.1"
    addr = ipaddress.ip_address(listener.ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return listener.ip


def _dual_stack() -> bool:
    try:
        return Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() == "0"
    except OSError:
        return True


def token_protection(listener: Listener) -> str | None:
    """How a listener turns away a caller without Ray's token ("HTTP 401",
    "gRPC UNAUTHENTICATED (...)"), or None if it does not."""
    ip = reachable_ip(listener)
    status = http_status(ip, listener.port)
    if status is not None:
        return f"HTTP {status}" if status in (401, 403) else None
    answer = grpc_unauthenticated_call(ip, listener.port)
    if answer is not None and answer[1] == "UNAUTHENTICATED":
        return f"gRPC UNAUTHENTICATED ({answer[0]})"
    return None


def loopback_only() -> bool:
    """True when this network namespace has no interface but ``lo`` (asked of the
    kernel: /sys/class/net shows the namespace /sys was mounted in)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


# --- strace -------------------------------------------------------------------

# Ray's node-IP detection (GetNodeIpAddressFromPerspective, with no address to ask
# about) connects a UDP socket to these and reads the local address the kernel
# chose: a route lookup, no packet. Ray 2.60 does it in every `ray start` and
# runtime-env agent, with or without --node-ip-address; no option turns it off.
RAY_ROUTE_PROBES = frozenset({("8.8.8.8", 53), ("2001:4860:4860::8888", 53)})


@dataclass(frozen=True)
class Destination:
    pid: int  # the thread's id (strace -ff writes one file per thread)
    call: str  # connect, sendto, sendmsg, sendmmsg
    proto: str  # TCP, UDP, TCPv6, UDPv6 (strace -yy), or "" if not shown
    ip: str
    port: int
    result: str  # "0", "-1 ENETUNREACH (Network is unreachable)", ...

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.ip)

    @property
    def udp_connect(self) -> bool:
        return self.call == "connect" and self.proto.startswith("UDP")

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.call}({self.proto or '?'}) {host}:{self.port} = {self.result}"


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def strace_argv(out_prefix: Path) -> list[str]:
    """strace in front of a command: every socket call that names or implies a
    destination, one output file per thread (``out_prefix.TID``: no interleaved
    lines), sockets decorated with protocol and peer (``-yy``), no payloads."""
    # --seccomp-bpf: only the traced calls stop the process (Ray stays fast)
    return [STRACE, "-f", "-ff", "--seccomp-bpf", "-qq", "-yy", "-s", "0",
            "-e", f"trace={TRACED_CALLS}", "-o", str(out_prefix)]


_CALL = re.compile(r"^(connect|sendto|sendmsg|sendmmsg)\((\d+)(?:<([A-Za-z0-9]+):\[(.*?)\]>)?"
                   r"(.*)$")
_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\),.*?'
                    r'inet_pton\(AF_INET6, "([^"]+)"')
_PEER = re.compile(r"->\[?([0-9a-fA-F.:]+?)\]?:(\d+)$")
_RESULT = re.compile(r"\) += (.*)$")


def traced_destinations(out_prefix: Path) -> list[Destination]:
    """Every IPv4/IPv6 destination in the trace files ``out_prefix.TID``.

    A ``connect`` names its address; a send names one (a datagram) or goes to its
    connected socket's peer, which ``-yy`` shows as ``<UDP:[local->peer]>``.
    Unix and netlink sockets are not network traffic and are left out.
    """
    found = []
    for path in sorted(out_prefix.parent.glob(out_prefix.name + ".*")):
        tid = int(path.suffix[1:])
        for line in path.read_text(errors="replace").splitlines():
            m = _CALL.match(line)
            if m is None:
                continue
            call, _fd, proto, socket_info, rest = m.groups()
            proto = proto or ""
            if proto and not proto.startswith(("TCP", "UDP")):
                continue  # UNIX, NETLINK, ...
            result = _RESULT.search(rest)
            outcome = result.group(1) if result else "(unfinished)"
            named = [(ip, int(port)) for regex in (_INET, _INET6)
                     for port, ip in regex.findall(rest)]
            if not named and call != "connect" and socket_info:
                peer = _PEER.search(socket_info)
                if peer:
                    named = [(peer.group(1), int(peer.group(2)))]
            found += [Destination(tid, call, proto, ip, port, outcome) for ip, port in named]
    return found


def nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> set[str]:
    """The resolvers a DNS lookup here would ask (glibc's default when none is named)."""
    out = set()
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                out.add(fields[1].split("%")[0])
    return out or {"127.0.0.1", "::1"}


def is_dns(dest: Destination, resolvers: set[str]) -> bool:
    """A DNS query or its attempt (also to a resolver on loopback: it forwards it)."""
    return dest.port == 53 and dest.ip in resolvers


def leaves_machine(dest: Destination, resolvers: set[str]) -> bool:
    """Traffic that goes, or was attempted to go, off this machine: a TCP connection
    or a datagram to a non-loopback address, and any DNS query. A UDP ``connect``
    sends nothing; only Ray's route probes (:data:`RAY_ROUTE_PROBES`) are let pass."""
    if is_dns(dest, resolvers):
        return True
    if dest.loopback:
        return False
    return not (dest.udp_connect and (dest.ip, dest.port) in RAY_ROUTE_PROBES)


def thread_commands() -> dict[int, str]:
    """Every live thread id -> its process's command line (trace files are per thread)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            tids = os.listdir(proc / "task")
        except OSError:
            continue
        for tid in tids:
            out[int(tid)] = cmd.strip()[:160]
    return out
