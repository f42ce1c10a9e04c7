#!/usr/bin/env python3
"""A TLS proxy in front of the test kube-apiserver that misbehaves on command.

Usage:
  fault-proxy.py --listen ADDR --upstream ADDR:PORT --cert F --key F --ca F

It listens on ADDR (a free port), terminates TLS with the apiserver's own serving certificate
and forwards each connection to the apiserver over TLS, so a client pointed at it sees the
apiserver. It prints `listening ADDR:PORT` once ready, then reads one mode per line on stdin
and answers each with one line on stdout:

  pass  forward (the start)
  500   close every open connection; answer each new request `500 Internal Server Error`
  hang  stop forwarding on every open connection, for good; accept new connections and
        never answer them (not even the TLS handshake)

A connection left hanging stays so after the mode changes, as behind a load balancer that
lost its backend: the client has to give it up itself. Needs Python 3.11 (StreamWriter.start_tls).
"""

import argparse
import asyncio
import json
import ssl
import sys

STATUS_500 = json.dumps({
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "fault-proxy: the apiserver is failing (injected)",
    "reason": "InternalError",
    "code": 500,
}).encode()


class Proxy:
    def __init__(self, upstream, server_tls, client_tls):
        self.host, port = upstream.rsplit(":", 1)
        self.port = int(port)
        self.server_tls = server_tls
        self.client_tls = client_tls
        self.mode = "pass"
        # Forwarded connections: their two writers, and the event that lets their pumps go on.
        self.open = set()

    def set_mode(self, mode):
        closed = frozen = 0
        if mode == "500":
            for conn in list(self.open):
                for writer in conn["writers"]:
                    writer.transport.abort()
                closed += 1
            self.open.clear()
        elif mode == "hang":
            for conn in self.open:
                conn["go"].clear()
                frozen += 1
            # Frozen for good: no longer ours to close or release.
            self.open.clear()
        self.mode = mode
        return f"mode {mode}: closed {closed}, left hanging {frozen}"

    async def handle(self, reader, writer):
        if self.mode == "hang":
            await hang_forever(writer)
            return
        try:
            await writer.start_tls(self.server_tls)
        except (OSError, ssl.SSLError):
            writer.transport.abort()
            return
        if self.mode == "500":
            await answer_500(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.client_tls, server_hostname=self.host)
        except (OSError, ssl.SSLError):
            writer.transport.abort()
            return
        go = asyncio.Event()
        go.set()
        conn = _Conn(writers=(writer, up_writer), go=go)
        self.open.add(conn)
        await asyncio.gather(
            pump(reader, up_writer, go), pump(up_reader, writer, go), return_exceptions=True)
        self.open.discard(conn)
        for w in (writer, up_writer):
            w.transport.abort()


class _Conn(dict):
    """A forwarded connection, hashable by identity so it can live in a set."""

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


async def pump(reader, writer, go):
    while True:
        data = await reader.read(65536)
        await go.wait()
        if not data:
            writer.transport.abort()
            return
        writer.write(data)
        await writer.drain()


async def hang_forever(writer):
    try:
        await asyncio.Event().wait()
    finally:
        writer.transport.abort()


async def answer_500(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        if length:
            await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 500 Internal Server Error\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(STATUS_500)}\r\n".encode()
            + b"Connection: close\r\n\r\n" + STATUS_500)
        await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError):
        pass
    finally:
        writer.transport.abort()


async def control(proxy):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        mode = line.strip()
        if mode not in ("pass", "500", "hang"):
            print(f"error: unknown mode {mode!r}", flush=True)
            continue
        print(proxy.set_mode(mode), flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    args = parser.parse_args()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(args.cert, args.key)
    server_tls.set_alpn_protocols(["http/1.1"])
    client_tls = ssl.create_default_context(cafile=args.ca)
    client_tls.set_alpn_protocols(["http/1.1"])
    proxy = Proxy(args.upstream, server_tls, client_tls)
    server = await asyncio.start_server(proxy.handle, args.listen, 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    async with server:
        # stdin closing (the test is gone) ends the proxy.
        await control(proxy)


if __name__ == "__main__":
    asyncio.run(main())
