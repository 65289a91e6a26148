"""The vnode's kubelet API: what ``kubectl logs``, ``exec`` and ``port-forward`` reach.

kube-apiserver dials ``https://<Node InternalIP>:<daemonEndpoints port>`` for
pod logs (plain GET), exec and port-forward (SPDY/3.1 upgrades; the API
server translates kubectl's WebSockets). One server per vnode runs in a
thread with its own event loop and listens on every Node's own loopback
address with one port (never a wildcard address): the request path names the pod.

Only the API server may call: TLS with a client certificate required, signed
by the cluster CA (from the vnode's kubeconfig) **and** with the common name
of the API server's kubelet client (the same CA signs the admin's
certificate). The serving certificate comes from the cluster's
``kubelet-serving`` signer (``kubelet_cert``), so the API server can verify it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from pathlib import Path

from rayscale.vnode import kubelet_exec, kubelet_portforward
from rayscale.vnode.kubelet_http import (
    BadRequest,
    Lookup,
    PodView,
    Request,
    is_spdy_upgrade,
    negotiate,
    read_request,
    respond,
    status_body,
    switch,
)
from rayscale.vnode.kubelet_logs import serve_logs

log = logging.getLogger("rayscale.vnode.kubelet")

#: The client the dev cluster's API server presents (``devcluster.certs``).
API_SERVER_CLIENT = "kube-apiserver-kubelet-client"
HEAD_TIMEOUT_S = 30.0


def tls_context(cert: Path, key: Path, client_ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=client_ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def peer_common_name(writer: asyncio.StreamWriter) -> str | None:
    ssl_object = writer.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class KubeletApi:
    """The server thread. ``start`` binds and returns the port; ``stop`` ends it."""

    def __init__(self, lookup: Lookup, ips: list[str], context: ssl.SSLContext) -> None:
        self.lookup, self.ips, self.context = lookup, ips, context
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.Server] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="kubelet-api")

    def start(self) -> int:
        port = asyncio.run_coroutine_threadsafe(self._bind(), self._started()).result(30)
        log.info("kubelet API on %s port %d", ",".join(self.ips), port)
        return port

    def _started(self) -> asyncio.AbstractEventLoop:
        self.thread.start()
        return self.loop

    async def _bind(self) -> int:
        """One port on every Node address (a port taken on one of them: try another)."""
        for _ in range(20):
            first = await asyncio.start_server(self._handle, self.ips[0], 0, ssl=self.context)
            port = int(first.sockets[0].getsockname()[1])
            servers = [first]
            try:
                for ip in self.ips[1:]:
                    servers.append(await asyncio.start_server(self._handle, ip, port,
                                                              ssl=self.context))
            except OSError:
                for server in servers:
                    server.close()
                continue
            self.servers = servers
            return port
        raise RuntimeError("no port free on every Node address for the kubelet API")

    def stop(self) -> None:
        if not self.thread.is_alive():
            return

        async def close() -> None:
            for server in self.servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if peer_common_name(writer) != API_SERVER_CLIENT:
                respond(writer, 403, "Forbidden", "Forbidden: only the API server may call")
                return
            try:
                request = await asyncio.wait_for(read_request(reader), HEAD_TIMEOUT_S)
                await self._route(reader, writer, request)
            except BadRequest as e:
                respond(writer, 400, "Bad Request", str(e))
            except LookupError as e:
                respond(writer, 404, "Not Found", str(e))
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:
            log.exception("kubelet API request failed")
        finally:
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 5)
                writer.close()

    def _pod(self, namespace: str, name: str, container: str | None) -> PodView:
        pod = self.lookup(namespace, name)
        if pod is None:
            raise LookupError(f'pod "{name}" does not exist')
        if container is not None and container not in pod.containers:
            raise LookupError(f'container "{container}" in pod "{name}" is not available')
        return pod

    async def _route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        parts, method = request.parts, request.method
        kind = parts[0] if parts else ""
        if kind == "healthz" and method == "GET":
            respond(writer, 200, "OK", "ok")
        elif kind == "containerLogs" and len(parts) == 4 and method == "GET":
            pod = self._pod(parts[1], parts[2], parts[3])
            await serve_logs(writer, request, pod, parts[3], self.lookup)
        elif kind == "exec" and len(parts) in (4, 5) and method in ("GET", "POST"):
            await self._exec(reader, writer, request, parts[1], parts[2], parts[-1])
        elif kind == "portForward" and len(parts) in (3, 4) and method in ("GET", "POST"):
            pod = self._pod(parts[1], parts[2], None)
            protocol = negotiate(request, [kubelet_portforward.PROTOCOL])
            if not is_spdy_upgrade(request) or protocol is None:
                raise BadRequest("unable to upgrade: SPDY/3.1 with portforward.k8s.io needed")
            await switch(writer, protocol)
            await kubelet_portforward.serve_portforward(reader, writer, pod.ip, pod.name)
        else:
            respond(writer, 404, "Not Found", "404 page not found")

    async def _exec(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: Request, namespace: str, name: str, container: str) -> None:
        pod = self._pod(namespace, name, container)
        pid = pod.containers[container].pid
        if pid is None:
            raise LookupError(f'container not found ("{container}")')
        command = request.query.get("command", [])
        if not command:
            raise BadRequest("you must specify at least 1 command")
        protocol = negotiate(request, kubelet_exec.PROTOCOLS)
        if not is_spdy_upgrade(request) or protocol is None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\n\r\n" + status_body(
                             "unable to upgrade: SPDY/3.1 with a v4.channel.k8s.io "
                             "protocol needed", "BadRequest", 400).encode())
            return
        await switch(writer, protocol)
        tty = request.flag("tty")
        await kubelet_exec.serve_exec(reader, writer, pid, command, request.flag("input"),
                                      request.flag("output"), request.flag("error"), tty)
