"""Server side of SPDY/3.1, as kube-apiserver speaks it to kubelets (spdystream v0.5.0).

The API server always talks SPDY/3.1 to a kubelet for exec and port-forward
(it translates kubectl's WebSockets itself), and no maintained Python SPDY
library exists, so this is the framing on ``zlib`` and ``struct``. What
spdystream does, and so all this needs: streams opened by the client (odd ids)
answered at once with an empty SYN_REPLY, DATA with FIN as half-close,
RST_STREAM, PING echoed, GOAWAY. No flow control: spdystream ignores SETTINGS
and WINDOW_UPDATE, and so does this. Headers are compressed with one zlib
stream per direction using the SPDY/3 dictionary.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import zlib
from collections.abc import Callable

# the SPDY/3 header dictionary (spec section 2.6.10.1; spdystream's headerDictionary)
ZDICT = (
    b'\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00'
    b'\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00'
    b'\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\raccept-'
    b'ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\rauthorization\x00\x00\x00\rcache'
    b'-control\x00\x00\x00\nconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10conten'
    b't-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length'
    b'\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\rcontent-r'
    b'ange\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expec'
    b't\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00'
    b'\x00\x00\x11if-modified-since\x00\x00\x00\rif-none-match\x00\x00\x00\x08if-rang'
    b'e\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\rlast-modified\x00\x00\x00\x08loc'
    b'ation\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authent'
    b'icate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer'
    b'\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer'
    b'\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\nuser-agent\x00\x00'
    b'\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00'
    b'\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00'
    b'\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\nset'
    b'-cookie\x00\x00\x00\nkeep-alive\x00\x00\x00\x06origin10010120120220520'
    b'630030230330430530630740240540640740840941041141'
    b'2413414415416417502504505203 Non-Authoritative I'
    b'nformation204 No Content301 Moved Permanently400'
    b' Bad Request401 Unauthorized403 Forbidden404 Not'
    b' Found500 Internal Server Error501 Not Implement'
    b'ed503 Service UnavailableJan Feb Mar Apr May Jun'
    b' Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed'
    b', Thu, Fri, Sat, Sun, GMTchunked,text/html,image'
    b'/png,image/jpg,image/gif,application/xml,applica'
    b'tion/xhtml+xml,text/plain,text/javascript,public'
    b'privatemax-age=gzip,deflate,sdchcharset=utf-8cha'
    b'rset=iso-8859-1,utf-,*,enq=0.'
)

SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY, HEADERS = 1, 2, 3, 6, 7, 8
FLAG_FIN = 0x01
RST_CANCEL = 5
_MAX_DATA = 0xFFFFFF

Headers = dict[str, list[str]]


class Stream:
    """One client-opened stream: incoming data in a queue, ``None`` at FIN/reset/close."""

    def __init__(self, session: Session, stream_id: int, headers: Headers) -> None:
        self.session, self.id, self.headers = session, stream_id, headers
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.local_fin = False
        self.reset = False

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    async def write(self, data: bytes) -> None:
        if self.local_fin or self.reset or self.session.closed.is_set():
            return
        for i in range(0, len(data), _MAX_DATA):
            self.session.data(self.id, data[i:i + _MAX_DATA])
        await self.session.drain()

    def close(self) -> None:
        """Half-close: an empty DATA frame with FIN."""
        if not self.local_fin and not self.reset:
            self.local_fin = True
            self.session.data(self.id, b"", fin=True)

    async def read(self) -> bytes | None:
        return await self.inbox.get()


class Session:
    """One SPDY/3.1 connection after the HTTP upgrade; ``on_stream`` sees each new stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_stream: Callable[[Stream], None]) -> None:
        self.reader, self.writer, self.on_stream = reader, writer, on_stream
        self.inflate = zlib.decompressobj(zdict=ZDICT)
        self.deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, ZDICT)
        self.streams: dict[int, Stream] = {}
        self.last_remote = 0
        self.closed = asyncio.Event()

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(payload))
                          + payload)

    def _header_block(self, headers: Headers) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, values in headers.items():
            k, v = name.lower().encode(), "\0".join(values).encode()
            raw += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def _parse_headers(self, compressed: bytes) -> Headers:
        raw = self.inflate.decompress(compressed)
        (count,) = struct.unpack_from(">I", raw, 0)
        offset, out = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, offset)
            name = raw[offset + 4:offset + 4 + n].decode()
            offset += 4 + n
            (n,) = struct.unpack_from(">I", raw, offset)
            value = raw[offset + 4:offset + 4 + n].decode()
            offset += 4 + n
            out[name.lower()] = value.split("\0")
        return out

    def data(self, stream_id: int, payload: bytes, fin: bool = False) -> None:
        if self.writer.is_closing():
            return
        flags = FLAG_FIN if fin else 0
        self.writer.write(struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload))
                          + payload)

    def reset(self, stream_id: int, status: int = RST_CANCEL) -> None:
        self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def goaway(self) -> None:
        self._control(GOAWAY, 0, struct.pack(">II", self.last_remote, 0))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError):
            self.closed.set()

    async def serve(self) -> None:
        """Read frames until the peer goes away; every stream then reads ``None``."""
        try:
            while True:
                head = await self.reader.readexactly(8)
                word, rest = struct.unpack(">II", head)
                flags, length = rest >> 24, rest & 0xFFFFFF
                payload = await self.reader.readexactly(length)
                if word & 0x80000000:
                    if not self._on_control(word & 0xFFFF, flags, payload):
                        break
                else:
                    stream = self.streams.get(word & 0x7FFFFFFF)
                    if stream is not None:
                        if payload:
                            stream.inbox.put_nowait(payload)
                        if flags & FLAG_FIN:
                            stream.inbox.put_nowait(None)
                await self.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, zlib.error,
                struct.error):
            pass
        finally:
            self.closed.set()
            for stream in self.streams.values():
                stream.inbox.put_nowait(None)

    def _on_control(self, kind: int, flags: int, payload: bytes) -> bool:
        if kind == SYN_STREAM:
            stream_id = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            stream = Stream(self, stream_id, self._parse_headers(payload[10:]))
            self.last_remote = stream_id
            self.streams[stream_id] = stream
            if flags & FLAG_FIN:
                stream.inbox.put_nowait(None)
            # at once: the Go client blocks in CreateStream until the reply comes
            self._control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._header_block({}))
            self.on_stream(stream)
        elif kind == RST_STREAM:
            stream_id = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            gone = self.streams.pop(stream_id, None)
            if gone is not None:
                gone.reset = True
                gone.inbox.put_nowait(None)
        elif kind == PING:
            self._control(PING, 0, payload)
        elif kind == GOAWAY:
            return False
        elif kind == HEADERS:
            self._parse_headers(payload[4:])  # keeps the zlib stream in step
        return True
