"""The HTTP/1.1 pieces the kubelet API needs: one request per connection, written by hand.

Hand-written because exec and port-forward take over the raw connection after
a ``101 Switching Protocols`` to speak SPDY, which HTTP libraries do not hand
over. The API server asks for ``http/1.1`` by ALPN; nothing here offers h2.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class ContainerView:
    """What the kubelet API needs of one container: its main process and instance."""

    pid: int | None  # running: the container's process (in its namespaces)
    restart_count: int


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    ip: str
    directory: Path
    containers: dict[str, ContainerView] = field(default_factory=dict)


class Lookup(Protocol):
    def __call__(self, namespace: str, name: str) -> PodView | None: ...


@dataclass(frozen=True)
class Request:
    method: str
    parts: list[str]
    query: dict[str, list[str]]
    headers: dict[str, list[str]]

    def flag(self, name: str) -> bool:
        return self.query.get(name, [""])[0] in ("1", "true", "True")

    def header(self, name: str) -> str:
        return ",".join(self.headers.get(name, []))


class BadRequest(Exception):
    pass


async def read_request(reader: asyncio.StreamReader) -> Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head too large") from e
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ")
    if len(first) != 3:
        raise BadRequest("malformed request line")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    url = urlsplit(first[1])
    parts = [unquote(p) for p in url.path.split("/") if p]
    return Request(first[0], parts, parse_qs(url.query), headers)


def respond(writer: asyncio.StreamWriter, code: int, reason: str, message: str) -> None:
    """A plain-text answer; the API server shows the body to the kubectl user."""
    body = message.encode()
    writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def status_body(message: str, reason: str, code: int) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "code": code})


def negotiate(request: Request, supported: list[str]) -> str | None:
    """The first protocol the client offers that we speak (as httpstream.Handshake)."""
    offered = [p.strip() for v in request.headers.get("x-stream-protocol-version", [])
               for p in v.split(",") if p.strip()]
    return next((p for p in offered if p in supported), None)


def is_spdy_upgrade(request: Request) -> bool:
    return ("upgrade" in request.header("connection").lower()
            and "spdy/3.1" in request.header("upgrade").lower())


async def switch(writer: asyncio.StreamWriter, protocol: str) -> None:
    """101 to SPDY/3.1; nothing may follow until the client's first frame."""
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n").encode())
    await writer.drain()
