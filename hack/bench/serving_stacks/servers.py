"""Servers measured by hack/bench/serving_stacks.py; they run in the benchmark venv, not the project's.

ASGI apps (served by the uvicorn, granian and hypercorn command lines, ``servers:<name>``):

    delivery_app             FastAPI, GET /file -> FileResponse (Range served by Starlette)
    delivery_app_nopathsend  the same with ``http.response.pathsend`` hidden from the app
    analytics_app            FastAPI, POST /ingest: gzip body inflated while it is read, size capped
    analytics_raw            the same as a bare ASGI callable (no FastAPI)
    link_app                 raw ASGI WebSocket: pong, and a binary message starting with B goes to all

Stand-alone servers (``python servers.py <kind> <stack> --port P [--loop asyncio]``, uvloop by default):

    delivery aiohttp | analytics aiohttp | link websockets | link picows | link aiohttp | link wsproto

Environment: BENCH_FILE (the file /file serves), BENCH_MAX_INFLATED (bytes, default 16 MiB),
BENCH_PICOWS_READBUF (picows' initial read buffer per connection, default 16 KiB as in picows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import zlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

FILE = os.environ.get("BENCH_FILE", "/tmp/mpaas-bench-file")
MAX_INFLATED = int(os.environ.get("BENCH_MAX_INFLATED", str(16 << 20)))


class TooLarge(Exception):
    pass


class Inflater:
    """Gzip inflated chunk by chunk; never holds more than the cap, counts JSON lines."""

    def __init__(self, cap: int = MAX_INFLATED) -> None:
        self.d = zlib.decompressobj(wbits=31)
        self.cap = cap
        self.size = 0
        self.lines = 0

    def feed(self, chunk: bytes) -> None:
        data = chunk
        while data:
            out = self.d.decompress(data, self.cap - self.size + 1)
            self._take(out)
            data = self.d.unconsumed_tail

    def finish(self) -> None:
        self._take(self.d.flush())
        if not self.d.eof:
            raise ValueError("truncated gzip body")

    def _take(self, out: bytes) -> None:
        self.size += len(out)
        if self.size > self.cap:
            raise TooLarge
        self.lines += out.count(b"\n")


# --- ASGI (uvicorn, granian, hypercorn) ------------------------------------------------------------


def _fastapi_apps() -> tuple[Any, Any]:
    delivery = FastAPI()

    @delivery.get("/file")
    async def get_file() -> FileResponse:
        return FileResponse(FILE, media_type="application/octet-stream")

    analytics = FastAPI()

    @analytics.post("/ingest")
    async def ingest(request: Request) -> JSONResponse:
        inflater = Inflater()
        try:
            async for chunk in request.stream():
                inflater.feed(chunk)
            inflater.finish()
        except TooLarge:
            return JSONResponse({"error": "too large"}, status_code=413)
        except (ValueError, zlib.error):
            return JSONResponse({"error": "bad gzip"}, status_code=400)
        return JSONResponse({"lines": inflater.lines, "bytes": inflater.size})

    return delivery, analytics


delivery_app, analytics_app = _fastapi_apps()


async def analytics_raw(scope: dict, receive: Any, send: Any) -> None:
    """analytics_app without FastAPI: the body read straight from ASGI receive()."""
    if scope["type"] != "http":
        return
    inflater = Inflater()
    status, answer = 200, b""
    try:
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            inflater.feed(msg.get("body", b""))
            more = msg.get("more_body", False)
        inflater.finish()
        answer = b'{"lines":%d,"bytes":%d}' % (inflater.lines, inflater.size)
    except TooLarge:
        status, answer = 413, b'{"error":"too large"}'
    except (ValueError, zlib.error):
        status, answer = 400, b'{"error":"bad gzip"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def delivery_app_nopathsend(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and "http.response.pathsend" in scope.get("extensions", {}):
        scope = dict(scope)
        scope["extensions"] = {k: v for k, v in scope["extensions"].items() if k != "http.response.pathsend"}
    await delivery_app(scope, receive, send)


_asgi_peers: set[Any] = set()


async def link_app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    _asgi_peers.add(send)
    try:
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data and data[:1] == b"B":
                out = {"type": "websocket.send", "bytes": data}
                for peer in list(_asgi_peers):
                    try:
                        await peer(out)
                    except Exception:
                        _asgi_peers.discard(peer)
    finally:
        _asgi_peers.discard(send)


# --- stand-alone servers ---------------------------------------------------------------------------


async def aiohttp_delivery(port: int) -> None:
    from aiohttp import web

    async def get_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(FILE, headers={"Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/file", get_file)
    await _aiohttp_serve(app, port)


async def aiohttp_analytics(port: int) -> None:
    from aiohttp import web

    async def ingest(request: web.Request) -> web.Response:
        inflater = Inflater()
        try:
            async for chunk in request.content.iter_any():
                inflater.feed(chunk)
            inflater.finish()
        except TooLarge:
            return web.json_response({"error": "too large"}, status=413)
        except (ValueError, zlib.error):
            return web.json_response({"error": "bad gzip"}, status=400)
        return web.json_response({"lines": inflater.lines, "bytes": inflater.size})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/ingest", ingest)
    await _aiohttp_serve(app, port, auto_decompress=False)  # aiohttp would inflate it, uncapped


async def aiohttp_link(port: int) -> None:
    from aiohttp import WSMsgType, web

    peers: set[web.WebSocketResponse] = set()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, compress=False)
        await ws.prepare(request)
        peers.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data[:1] == b"B":
                    for peer in list(peers):
                        try:
                            await peer.send_bytes(msg.data)
                        except Exception:
                            peers.discard(peer)
        finally:
            peers.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    await _aiohttp_serve(app, port)


async def _aiohttp_serve(app: Any, port: int, **kwargs: Any) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, **kwargs)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


async def websockets_link(port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    peers: set[Any] = set()

    async def handler(ws: Any) -> None:
        peers.add(ws)
        try:
            async for msg in ws:
                if isinstance(msg, bytes) and msg[:1] == b"B":
                    broadcast(peers, msg)
        finally:
            peers.discard(ws)

    async with serve(handler, "127.0.0.1", port, ping_interval=None, compression=None, backlog=4096):
        await asyncio.Event().wait()


async def picows_link(port: int) -> None:
    from picows import WSListener, WSMsgType, ws_create_server

    peers: set[Any] = set()

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            peers.add(transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.BINARY:
                data = frame.get_payload_as_bytes()
                if data[:1] == b"B":
                    for peer in peers:
                        peer.send(WSMsgType.BINARY, data)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            peers.discard(transport)

    readbuf = int(os.environ.get("BENCH_PICOWS_READBUF", str(16 * 1024)))  # picows' default: 16 KiB
    fastnet = {"0": False, "1": True}.get(os.environ.get("BENCH_PICOWS_AIOFASTNET", ""))  # None: picows decides
    server = await ws_create_server(
        lambda request: Listener(),
        "127.0.0.1",
        port,
        backlog=4096,
        read_buffer_init_size=readbuf,
        use_aiofastnet=fastnet,
    )
    async with server:
        await server.serve_forever()


async def wsproto_link(port: int) -> None:
    """wsproto on asyncio streams: one task per connection."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Ping,
        Request,
    )

    peers: set[Any] = set()

    class Peer:
        __slots__ = ("writer", "ws")

        def __init__(self, ws: WSConnection, writer: asyncio.StreamWriter) -> None:
            self.ws = ws
            self.writer = writer

        def send(self, data: bytes) -> None:
            self.writer.write(self.ws.send(BytesMessage(data=data)))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        peer = Peer(ws, writer)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        writer.write(ws.send(AcceptConnection()))
                        peers.add(peer)
                    elif isinstance(event, Ping):
                        writer.write(ws.send(event.response()))
                    elif isinstance(event, BytesMessage) and event.data[:1] == b"B":
                        msg = bytes(event.data)
                        for other in list(peers):
                            try:
                                other.send(msg)
                            except Exception:
                                peers.discard(other)
                    elif isinstance(event, CloseConnection):
                        writer.write(ws.send(event.response()))
                        return
        except (ConnectionError, OSError):
            return
        finally:
            peers.discard(peer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


STANDALONE = {
    ("delivery", "aiohttp"): aiohttp_delivery,
    ("analytics", "aiohttp"): aiohttp_analytics,
    ("link", "aiohttp"): aiohttp_link,
    ("link", "websockets"): websockets_link,
    ("link", "picows"): picows_link,
    ("link", "wsproto"): wsproto_link,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("stack")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = ap.parse_args()
    serve = STANDALONE[(args.kind, args.stack)](args.port)
    if args.loop == "asyncio":
        asyncio.run(serve)  # the only loop with loop.sendfile (os.sendfile); uvloop makes aiohttp copy
    else:
        import uvloop

        uvloop.run(serve)


if __name__ == "__main__":
    main()
