"""Pieces of the kubelet API without a cluster: SPDY framing, log records, the PKI upgrade."""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from pathlib import Path

from cryptography import x509

from rayscale.devcluster.certs import KUBELET_CLIENT_CN, Pki, ensure_pki
from rayscale.vnode import logs
from rayscale.vnode.kubelet import API_SERVER_CLIENT
from rayscale.vnode.spdy import ZDICT, Session, Stream


def test_dictionary_is_spdy3s() -> None:
    assert len(ZDICT) == 1423 and zlib.adler32(ZDICT) == 0xE3C6A7C2


def _syn_stream(deflate: zlib._Compress, stream_id: int, headers: dict[str, str],
                fin: bool = False) -> bytes:
    raw = struct.pack(">I", len(headers))
    for k, v in headers.items():
        raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + block
    return struct.pack(">HHI", 0x8003, 1, ((1 if fin else 0) << 24) | len(payload)) + payload


def test_session_replies_echoes_pings_and_delivers_data() -> None:
    async def scenario() -> tuple[bytes, list[tuple[str, bytes | None]]]:
        deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, ZDICT)
        reader = asyncio.StreamReader()
        reader.feed_data(_syn_stream(deflate, 1, {"streamtype": "error"}))
        reader.feed_data(_syn_stream(deflate, 3, {"streamtype": "stdin"}))
        reader.feed_data(struct.pack(">HHI", 0x8003, 6, 4) + struct.pack(">I", 7))  # PING
        reader.feed_data(struct.pack(">II", 3, 5) + b"hello")
        reader.feed_data(struct.pack(">II", 3, 1 << 24))  # FIN
        reader.feed_eof()
        sent = bytearray()

        class Writer:
            def write(self, data: bytes) -> None:
                sent.extend(data)

            def is_closing(self) -> bool:
                return False

            async def drain(self) -> None:
                return None

        seen: list[Stream] = []
        session = Session(reader, Writer(), seen.append)  # type: ignore[arg-type]
        await session.serve()
        got = []
        for stream in seen:
            while not stream.inbox.empty():
                got.append((stream.header("streamtype"), stream.inbox.get_nowait()))
        return bytes(sent), got

    sent, got = asyncio.run(scenario())
    assert ("stdin", b"hello") in got and ("stdin", None) in got and ("error", None) in got
    # two SYN_REPLYs (type 2) and the PING (type 6) echoed
    kinds = []
    offset = 0
    while offset < len(sent):
        word, rest = struct.unpack_from(">II", sent, offset)
        kinds.append(word & 0xFFFF)
        offset += 8 + (rest & 0xFFFFFF)
    assert kinds == [2, 2, 6]


def test_log_capture_records_lines_and_partials(tmp_path: Path) -> None:
    fd = logs.capture(tmp_path, "c", 0)
    os.write(fd, b"one\ntwo\npart")
    os.close(fd)
    deadline = time.monotonic() + 10
    path = logs.instance_file(tmp_path, "c", 0)
    while path.read_bytes().count(b"\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "c.log").read_bytes() == b"one\ntwo\npart"
    records = [logs.parse(line) for line in path.read_bytes().splitlines()]
    assert [r.text for r in records if r] == [b"one\n", b"two\n", b"part"]
    assert logs.instances(tmp_path, "c") == [0]


def test_an_older_pki_gets_the_kubelet_client_and_keeps_its_ca(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    ca = pki.ca_cert.read_bytes()
    admin = pki.client_cert("admin").read_bytes()
    pki.client_cert("kubelet-client").unlink()
    pki.client_key("kubelet-client").unlink()
    again = ensure_pki(tmp_path / "pki")
    assert isinstance(again, Pki) and again.complete()
    assert pki.ca_cert.read_bytes() == ca and pki.client_cert("admin").read_bytes() == admin
    cert = x509.load_pem_x509_certificate(pki.client_cert("kubelet-client").read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == KUBELET_CLIENT_CN == API_SERVER_CLIENT  # the one name the vnode admits
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
