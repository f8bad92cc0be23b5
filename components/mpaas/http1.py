"""A lean HTTP/1.1 server: chosen paths go straight to a handler, every other path to an ASGI app.

The gateway's RPC paths are its hot path. Under uvicorn, the ASGI cycle around
them (a scope dict and message dicts per request, the response head and body in
two socket writes) cost more than the gateway's own work (docs/benchmarks.md).
Here a handler gets a `Request` and returns a `Reply`, written in one write.
Paths without a handler (health, readiness, metrics, the admin API) go to the
ASGI app with a whole-body request and a buffered response; the server runs
that app's lifespan.

HTTP/1.1 as RFC 9112 asks: keep-alive and `Connection: close`, HTTP/1.0,
pipelined requests answered in order, chunked request bodies (httptools),
`Expect: 100-continue` answered when the handler reads the body, HEAD, a body
limit enforced while reading, 400 on malformed requests, idle connections
closed after `keepalive_seconds`, and a drain on stop.

It faces the internet, so every resource a client can hold is bounded
(`Limits`): the head's size and header count (431), the time to send a head
and the pace of a body (408), the connections held at once (503). A request
that cannot be served (malformed, too large, too slow) is refused only after
the requests before it on the connection are answered, in order; then the
connection closes. Bytes after a request that ends the connection
(`Connection: close`, HTTP/1.0) are ignored, never served; an HTTP/1.0
request with `Transfer-Encoding` is refused (400), as are conflicting
`Content-Length` / `Transfer-Encoding` (llhttp).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote

import httptools

log = logging.getLogger("mpaas.http")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_PIPELINED = 16  # queued requests per connection before reading pauses
# On stop, an idle keep-alive connection stays open this long (within the drain): a request its client
# sent meanwhile is answered, with `Connection: close`, instead of being lost to a closing socket.
IDLE_GRACE_SECONDS = 2.0
_LINGER_SECONDS = 2.0  # after refusing a request, how long what the client still sends is read and dropped


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server; the answer when it asks for more (docs/gateway.md)."""

    max_head_bytes: int = 65536  # request line and headers, bytes (431)
    max_headers: int = 100  # header lines (431)
    head_timeout_seconds: float = 10.0  # from a request's first byte to the end of its head (408)
    # A body may take `body_timeout_seconds`, plus one second per `min_body_rate` bytes received (408).
    body_timeout_seconds: float = 10.0
    min_body_rate: int = 8192
    max_connections: int = 10000  # open at once; more are answered 503 and closed
    # A file reply (FileBody) may take `send_timeout_seconds`, plus one second per `min_send_rate` bytes; a
    # client that reads slower has its connection closed. Each piece of it (SEND_PIECE bytes) has the same
    # allowance, so a client that stops reading after a fast start is dropped then, not at the whole's end.
    send_timeout_seconds: float = 30.0
    min_send_rate: int = 16384


class Headers(Mapping[str, str]):
    """Request headers: lower-case names; `get` gives the first value, `items` every (name, value) as sent."""

    __slots__ = ("_first", "_pairs", "get")

    def __init__(self, pairs: list[tuple[str, str]]):
        self._pairs = pairs
        self._first = dict(reversed(pairs))  # the first occurrence wins
        self.get = self._first.get  # type: ignore[method-assign]  # the hot lookup, without a Python frame

    def __getitem__(self, name: str) -> str:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, name: object) -> bool:
        return name in self._first

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return self._pairs

    def repeated(self) -> set[str]:
        """Names sent more than once (empty for most requests: checked by length first)."""
        if len(self._first) == len(self._pairs):
            return set()
        seen: set[str] = set()
        out: set[str] = set()
        for name, _ in self._pairs:
            if name in seen:
                out.add(name)
            seen.add(name)
        return out


class Request:
    """One request: method, path (percent-decoded), query string, headers, client address, and its body."""

    __slots__ = (
        "_conn",
        "_waiter",
        "body_clock",
        "chunks",
        "client_ip",
        "complete",
        "failed",
        "headers",
        "keep_alive",
        "limit",
        "method",
        "overflow",
        "path",
        "query",
        "raw_path",
        "received",
        "size",
        "stages",
        "trusted",
        "waited",
    )

    def __init__(self, method: str, path: str, query: str, headers: Headers, client_ip: str):
        self.method, self.path, self.query, self.headers, self.client_ip = method, path, query, headers, client_ip
        self.raw_path = path
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = 1 << 62
        self.overflow = False
        self.complete = False
        self.failed = False  # its bytes broke off (malformed, too slow): answered with the connection's failure
        self.keep_alive = True
        self._conn: _Connection | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Per-stage timestamps, when a caller asks for them (the admin API's test calls).
        self.stages: list[tuple[str, float]] | None = None
        # Set by in-process callers (the admin API), never from the network.
        self.trusted = False
        # When the head was parsed, and the time the handler then spent waiting on other services
        # (upstreams): the difference is the time the request spent in this server.
        self.received = time.perf_counter()
        self.waited = 0.0
        self.body_clock = self.received  # when the body's time started (or 100 Continue was sent)

    @classmethod
    def whole(cls, method: str, path: str, headers: dict[str, str], body: bytes, client_ip: str = "") -> Request:
        """A request made in-process, its body already complete."""
        req = cls(method, path, "", Headers([(k.lower(), v) for k, v in headers.items()]), client_ip)
        req.chunks, req.size, req.complete = [body], len(body), True
        return req

    def mark(self, stage: str) -> None:
        if self.stages is not None:
            self.stages.append((stage, time.perf_counter()))

    async def body(self, limit: int) -> bytes | None:
        """The whole body, or None when it grows past `limit` bytes or the client goes away."""
        if not self.complete:
            conn = self._conn
            if conn is None or conn.closed or self.failed:
                return None
            if self.headers.get("expect", "").lower() == "100-continue" and conn.transport is not None:
                conn.transport.write(_CONTINUE)
                self.body_clock = time.perf_counter()  # the client sends the body only now
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            if not self.complete:
                return None
        return self.whole_body(limit)

    def whole_body(self, limit: int) -> bytes | None:
        """The body of a complete request (no wait), or None when it is over `limit` bytes."""
        if self.overflow or self.size > limit:
            return None
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class AsgiRequest(Request):
    """A `Request` over an ASGI scope and receive channel (HTTP/2 through hypercorn, tests)."""

    __slots__ = ("_receive",)

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]):
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        client = scope.get("client")
        query = scope.get("query_string", b"").decode("latin-1")
        super().__init__(scope["method"], scope["path"], query, Headers(pairs), client[0] if client else "")
        self._receive = receive

    async def body(self, limit: int) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class Reply(Protocol):
    status: int
    headers: dict[str, str]
    body: bytes
    more: list[tuple[str, str]] | None  # further lines, names that repeat (set-cookie), after `headers`


class FileBody:
    """A reply's body read from a file: `count` bytes from `offset` (a reply carries it as `file`, its `body`
    empty). The server sends it with sendfile(2) where the loop can (asyncio's, without TLS), else through a
    buffer with flow control, within the Limits' send time; it closes the file once done."""

    __slots__ = ("count", "file", "offset")

    def __init__(self, file: BinaryIO, offset: int, count: int):
        self.file, self.offset, self.count = file, offset, count


FILE_CHUNK = 256 * 1024  # per read when sendfile(2) cannot be used
SEND_PIECE = 4 << 20  # per sendfile(2) step, each timed on its own (smaller steps cost throughput)

Handler = Callable[[Request], Awaitable[Reply]]
Router = Callable[[str], Handler | None]  # path -> handler, or None for the ASGI app


class _Buffered:
    """A reply collected from the ASGI app."""

    __slots__ = ("body", "head", "lines", "status")

    def __init__(self) -> None:
        self.status, self.head, self.body, self.lines = 500, b"", b"", 0


class Server:
    """One listening socket; `router` picks a handler by path, `app` (ASGI) answers the rest."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        router: Router | None = None,
        body_limit: Callable[[], int] | None = None,
        keepalive_seconds: float = 5.0,
        reuse_port: bool = False,
        limits: Limits | None = None,
    ):
        self.app, self.host, self.port = app, host, port
        self.router = router or (lambda _path: None)
        self.body_limit = body_limit or (lambda: 8 << 20)
        self.keepalive_seconds = keepalive_seconds
        # Given here, else the app's (the gateway's come from its settings), else the defaults.
        app_limits = getattr(app, "server_limits", None)
        self.limits: Limits = limits or (app_limits if isinstance(app_limits, Limits) else Limits())
        self.reuse_port = reuse_port  # several processes on one port (mpaas.workers)
        self.connections: set[_Connection] = set()
        self.stopping = False  # after stop(): every answer that leaves a connection idle closes it
        self.idle_grace = IDLE_GRACE_SECONDS  # on stop, how long an idle connection may still bring a request
        self.lifespan_state: dict[str, Any] = {}
        self._server: asyncio.AbstractServer | None = None
        self._date = (0, b"")
        self._lifespan: _Lifespan | None = None
        self._all_closed: asyncio.Future[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    def date_header(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
        return self._date[1]

    async def start(self) -> None:
        self._lifespan = _Lifespan(self.app, self.lifespan_state)
        await self._lifespan.startup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.host, self.port, backlog=2048, reuse_port=self.reuse_port or None
            )
        except OSError:
            await self._lifespan.shutdown()  # the app started: let it stop cleanly before the error surfaces
            raise
        if self.port == 0:
            # getattr: uvloop's server gives a list where typeshed says tuple, which compiled code would refuse
            self.port = getattr(self._server, "sockets")[0].getsockname()[1]  # noqa: B009
        self._sweeper = loop.create_task(self._sweep())
        log.info("listening on http://%s:%d", self.host, self.port)

    async def _sweep(self) -> None:
        """One timer for all connections, not one per request: close those idle for `keepalive_seconds`,
        answer 408 where a head or a body is late."""
        lim = self.limits
        every = min(t for t in (self.keepalive_seconds, lim.head_timeout_seconds, lim.body_timeout_seconds) if t > 0)
        while True:
            await asyncio.sleep(every / 4)
            now, clock = time.monotonic(), time.perf_counter()
            idle = now - self.keepalive_seconds if self.keepalive_seconds > 0 else -1.0
            for conn in list(self.connections):
                if not conn.deaf and not conn.sending:  # (a deaf one reads no more; nor does one sending a file)
                    if conn.in_head and now - conn.head_started > lim.head_timeout_seconds:
                        conn.fail(408, "request head not received in time")
                        continue
                    req = conn.current
                    if (
                        req is not None
                        and not conn._paused  # its body cannot arrive while reading waits on queued requests
                        and not _awaiting_continue(req)  # nor before 100 Continue, sent when its handler reads
                        and clock - req.body_clock > lim.body_timeout_seconds + req.size / max(lim.min_body_rate, 1)
                    ):
                        conn.fail(408, "request body not received in time")
                        continue
                if conn.last_active < idle and not conn.busy:
                    conn.abort()

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `drain_seconds`), close the rest."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        self.stopping = True
        grace = self.idle_grace = min(IDLE_GRACE_SECONDS, drain_seconds)
        for conn in list(self.connections):
            conn.finish(grace)
        if self.connections:
            self._all_closed = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), drain_seconds)
            except TimeoutError:
                log.warning("%d connections still busy after %.0f s of draining", len(self.connections), drain_seconds)
        for conn in list(self.connections):
            conn.abort()
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    async def call_asgi(self, request: Request) -> _Buffered:
        """Answer through the ASGI app: the whole body in one message, the response buffered."""
        body = await request.body(self.body_limit())
        out = _Buffered()
        if body is None:
            out.status, out.body = 413, b"request body too large"
            return out
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": (self.host, self.port),
            "client": (request.client_ip, 0),
            "scheme": "http",
            "method": request.method,
            "root_path": "",
            "path": request.path,
            "raw_path": request.raw_path.encode("latin-1", "replace"),
            "query_string": request.query.encode("latin-1"),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()],
            "state": dict(self.lifespan_state),
        }
        sent = False
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # nothing more will come; the app stops waiting when it answers
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out.status = message["status"]
                kept = [
                    k + b": " + v + b"\r\n"
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-length", b"connection", b"transfer-encoding")
                ]
                out.head, out.lines = b"".join(kept), len(kept)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("ASGI app failed on %s %s", request.method, request.path)
            out.status, out.head, out.lines, parts = 500, b"", 0, [b"internal error"]
        out.body = b"".join(parts)
        return out


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_drained",
        "_failure",
        "_head_fresh",
        "_head_size",
        "_head_spill",
        "_headers",
        "_max_head",
        "_max_headers",
        "_paused",
        "_piece",
        "_url",
        "_write_paused",
        "busy",
        "client_ip",
        "closed",
        "current",
        "deaf",
        "head_started",
        "in_head",
        "last_active",
        "loop",
        "parser",
        "pending",
        "sending",
        "server",
        "serving",
        "transport",
        "upgraded",
    )

    def __init__(self, server: Server):
        self.server = server
        self.loop = asyncio.get_running_loop()  # kept: each get_running_loop() makes a getpid() system call
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.pending: deque[Request] = deque()  # parsed, waiting for their turn
        self.current: Request | None = None  # the request whose bytes are arriving
        self.serving: Request | None = None  # the request being answered
        self.busy = False
        self.closed = False
        self.upgraded = False
        self.deaf = False  # reads nothing more: after an Upgrade, a request that ends the connection, a failure
        self._failure: tuple[int, str] | None = None  # the answer owed once the requests before it are answered
        self._paused = False
        self._write_paused = False  # the transport's buffer is full: a file reply waits (resume_writing)
        self._drained: asyncio.Future[None] | None = None
        self.sending = False  # a file reply is going out: the next request's head and body clocks wait
        self._piece: asyncio.Future[int] | None = None  # asyncio's sendfile of a piece, while it runs
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self.last_active = time.monotonic()  # bytes in or the last answer out; read by the server's sweep
        # The head being received: since when, its bytes in complete lines, and in chunks it spans whole.
        self.in_head = False
        self.head_started = 0.0
        self._head_size = 0
        self._head_spill = 0
        self._head_fresh = False
        self._max_head, self._max_headers = server.limits.max_head_bytes, server.limits.max_headers

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        server = self.server
        if len(server.connections) >= server.limits.max_connections:
            self.deaf = self.closed = True
            transport.write(_refusal(503, b"too many connections", server.date_header()))  # type: ignore[attr-defined]
            transport.close()
            return
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)
        self.resume_writing()  # a file reply waiting to write learns the connection is gone
        for req in (self.current, *self.pending):
            if req is not None:
                req._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.deaf:
            return  # after an Upgrade, a request that closes the connection, or a failure: nothing more is read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade (h2c, websocket) is optional for the server: answer in HTTP/1.1, then close.
            # As under uvicorn, the parser hands over what follows the head, so such a request has no body.
            self.upgraded = self.deaf = True
            for req in (self.serving, self.current, *self.pending):
                if req is not None:
                    req.keep_alive = False
        except httptools.HttpParserError as e:
            if not self.deaf:  # else a callback already decided, or what follows a closing request is ignored
                self.fail(400, f"malformed request: {e}")
            return
        if self.in_head:  # a head still incomplete: httptools holds its partial line, so count whole chunks
            if self._head_fresh:
                self._head_fresh = False  # the chunk it began in (at most one read) is not counted
            else:
                self._head_spill += len(data)
                if self._head_spill > self._max_head:
                    self.fail(431, "request head too large")

    def fail(self, status: int, why: str) -> None:
        """Read nothing more; answer the requests already parsed, in order, then `status`, then close."""
        if self._failure is not None or self.closed:
            return
        self._failure = (status, why)
        self.deaf = True
        self.in_head = False
        req = self.current
        self.current = None
        if req is not None:
            req.failed = True
            if req is self.serving:
                req._wake()  # its handler stops waiting for the body; the answer is the failure
            elif req in self.pending:
                self.pending.remove(req)  # never started
        if not self.busy:
            self._send_failure()

    def _send_failure(self) -> None:
        failure, transport = self._failure, self.transport
        if failure is None or transport is None or self.closed:
            self.abort()
            return
        transport.write(_refusal(failure[0], failure[1].encode("latin-1", "replace"), self.server.date_header()))
        # A lingering close: a client still sending would get a reset, which can destroy the answer before it
        # reads it. Half-close, discard what still comes (deaf), and close when it does or after _LINGER.
        self.closed = True
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def eof_received(self) -> bool:
        return False  # the client is done: close (after what is being written)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.deaf:
            raise ValueError("no request is read after one that closes the connection")
        self._url = b""
        self._headers = []
        self.in_head = self._head_fresh = True
        self.head_started = self.last_active
        self._head_size = self._head_spill = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_head:
            self.fail(431, "request line too long")
            raise ValueError("refused")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
        self._head_size += len(name) + len(value)
        if self._head_size + len(self._url) > self._max_head or len(headers) > self._max_headers:
            self.fail(
                431, "request header fields too large" if len(headers) <= self._max_headers else "too many headers"
            )
            raise ValueError("refused")

    def on_headers_complete(self) -> None:
        self.in_head = False
        url = self._url
        if url[:1] == b"/":
            raw, _, query = url.partition(b"?")
            raw_path = raw.decode("latin-1")
        else:  # absolute form (a proxy-style request line) or "*"
            parsed = httptools.parse_url(url)
            raw_path, query = (parsed.path or b"/").decode("latin-1"), parsed.query or b""
        path = unquote(raw_path) if "%" in raw_path else raw_path
        method = self.parser.get_method().decode("ascii", "replace")
        headers = Headers(self._headers)
        if "transfer-encoding" in headers and self.parser.get_http_version() == "1.0":
            # RFC 9112 6.1: the framing of such a message is faulty; as nginx does, refuse it.
            self.fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            raise ValueError("refused")
        req = Request(method, path, query.decode("latin-1"), headers, self.client_ip)
        req.raw_path = raw_path
        req.keep_alive = self.parser.should_keep_alive() and not self.upgraded
        req.limit = self.server.body_limit()
        req._conn = self
        self.current = req
        self.pending.append(req)
        if not self.busy:
            self._next()
        elif len(self.pending) >= _MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True

    def on_body(self, chunk: bytes) -> None:
        req = self.current
        if req is None:
            return
        req.size += len(chunk)
        if req.size > req.limit:
            req.overflow, req.chunks = True, []  # keep counting, stop keeping
        else:
            req.chunks.append(chunk)

    def on_message_complete(self) -> None:
        req = self.current
        if req is not None:
            req.complete = True
            req._wake()
            self.current = None
            if not req.keep_alive:
                self.deaf = True  # what follows a request that ends the connection is never served

    # serving
    def _next(self) -> None:
        if self.pending and not self.closed:
            self.busy = True
            self.serving = self.pending.popleft()
            self.loop.create_task(self._serve(self.serving))
        else:
            self.busy, self.serving = False, None
            if self._failure is not None:
                self._send_failure()  # every request before it is answered
                return
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            self.last_active = time.monotonic()
            if self.server.stopping:  # an answer that outlasted stop() (a file) must not leave it open
                self.loop.call_later(self.server.idle_grace, self._close_if_idle)

    async def _serve(self, req: Request) -> None:
        server = self.server
        handler = server.router(req.path)
        file: FileBody | None = None
        try:
            if handler is not None:
                reply = await handler(req)
                status, body, lines = reply.status, reply.body, len(reply.headers)
                file = getattr(reply, "file", None)
                more = reply.more
                # The joins loop in C; each line then ends with CRLF, checked below.
                if more:
                    pairs = [*reply.headers.items(), *more]
                    lines = len(pairs)
                    joined = "\r\n".join(map(": ".join, pairs))
                else:
                    joined = "\r\n".join(map(": ".join, reply.headers.items()))
                head = (joined + "\r\n").encode("latin-1", "replace") if lines else b""
            else:
                buffered = await server.call_asgi(req)
                status, head, body, lines = buffered.status, buffered.head, buffered.body, buffered.lines
        except Exception:
            log.exception("request handler failed on %s %s", req.method, req.path)
            status, head, body, lines = 500, b"content-type: text/plain\r\n", b"internal error", 1
            if file is not None:  # the reply failed after naming its file: the 500 carries its own body
                file.file.close()
                file = None
        try:
            if head.count(b"\n") != lines or head.count(b"\r") != lines:  # a stray CR or LF would split the head
                log.error("refusing a response head with a bare line break on %s %s", req.method, req.path)
                status, head, body, lines = 500, b"content-type: text/plain\r\n", b"internal error", 1
                if file is not None:
                    file.file.close()
                    file = None
            if req.failed:  # its bytes broke off: the connection's failure is its answer
                self._send_failure()
                return
            # A body that did not fully arrive (too large, or unread) leaves the stream mid-message: close after.
            # Stopping: close once nothing more was received, so every request that arrived gets its answer.
            keep = req.keep_alive and req.complete and not req.overflow and not (server.stopping and not self.pending)
            transport = self.transport
            if transport is not None and not self.closed:
                bodiless = status == 304 or status == 204  # RFC 9110 8.6: no body, so no Content-Length of 0
                sending = file is not None and req.method != "HEAD" and file.count > 0 and not bodiless
                transport.write(
                    b"HTTP/1.1 %d %b\r\n%b%b%b%b\r\n%b"
                    % (
                        status,
                        _REASONS.get(status, b""),
                        server.date_header(),
                        head,
                        b""
                        if bodiless
                        else b"content-length: %d\r\n" % (file.count if file is not None else len(body)),
                        b"" if keep else b"connection: close\r\n",
                        b"" if req.method == "HEAD" or file is not None or bodiless else body,
                    )
                )
                if sending and file is not None and not await self._send_file(file):
                    # Part of the body is out: the connection cannot carry another answer. Dropped, not closed:
                    # a close would wait to flush what a client that stopped reading never takes.
                    self.closed = True
                    transport.abort()
                    return
                if not keep:
                    transport.close()
                    self.closed = True
        finally:
            if file is not None:
                file.file.close()
        self._next()

    async def _send_file(self, body: FileBody) -> bool:
        """Send `body` within the Limits' send time; False when it could not be sent whole."""
        lim = self.server.limits
        budget = lim.send_timeout_seconds + body.count / max(lim.min_send_rate, 1)
        self.sending = True
        try:
            await asyncio.wait_for(self._copy_file(body), budget)
            return True
        except (TimeoutError, OSError, ConnectionError, RuntimeError) as e:  # RuntimeError: a closed transport
            log.debug("file reply not sent whole: %r", e)
            return False
        finally:
            self.sending = False
            self._restart_clocks()

    def _restart_clocks(self) -> None:
        """A request that arrived in part while a file went out could not arrive whole (reading waits on the
        file): its head and body time start now."""
        now = time.perf_counter()
        if self.in_head:
            self.head_started = time.monotonic()
        req = self.current
        if req is not None and not _awaiting_continue(req):
            req.body_clock = now

    def _piece_time(self, size: int) -> float:
        lim = self.server.limits
        return lim.send_timeout_seconds + size / max(lim.min_send_rate, 1)

    async def _copy_file(self, body: FileBody) -> None:
        transport = self.transport
        if transport is None or self.closed:
            raise ConnectionError("connection closed")
        offset, left = body.offset, body.count
        try:
            while left > 0:
                piece = min(left, SEND_PIECE)
                step = self._piece = asyncio.ensure_future(
                    self.loop.sendfile(transport, body.file, offset, piece, fallback=False)
                )
                try:
                    async with asyncio.timeout(self._piece_time(piece)):
                        sent = await step
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self.closed and step.cancelled() and (task is None or not task.cancelling()):
                        raise ConnectionError("connection closed") from None  # by abort(), not a timeout
                    raise
                finally:
                    self._piece = None
                if sent != piece:  # sendfile(2) stops at the end of the file: one truncated while sent
                    raise ConnectionError("the file is shorter than the reply announced")
                offset += sent
                left -= sent
            return
        except (NotImplementedError, asyncio.SendfileNotAvailableError):  # uvloop, TLS: through a buffer
            pass
        await self.loop.run_in_executor(None, body.file.seek, offset)
        while left > 0:
            chunk = await self.loop.run_in_executor(None, body.file.read, min(FILE_CHUNK, left))
            if not chunk:
                raise ConnectionError("the file is shorter than the reply announced")
            if self.closed:
                raise ConnectionError("connection closed")
            transport.write(chunk)
            left -= len(chunk)
            if self._write_paused:
                self._drained = self.loop.create_future()
                async with asyncio.timeout(self._piece_time(len(chunk))):
                    await self._drained
                if self.closed:
                    raise ConnectionError("connection closed")

    def finish(self, grace: float) -> None:
        """On stop: answer what was received, the last answer closing the connection (see `_serve`); an idle
        connection is closed after `grace` unless a request arrived on it meanwhile.

        Closing an idle keep-alive connection at once loses a request its client has already sent (kube-proxy
        keeps established connections on a pod that left the endpoints): the client gets a reset, not an answer.
        """
        if not self.busy and not self.pending:
            self.loop.call_later(grace, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self.closed and not self.busy and not self.pending and not self.in_head:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        piece = self._piece
        if piece is not None and not piece.done():
            # Closing the socket under asyncio's sendfile breaks its transport: end the send; _serve then closes.
            piece.cancel()
            return
        if self.transport is not None:
            self.transport.close()


def _awaiting_continue(req: Request) -> bool:
    """Sent `Expect: 100-continue` and not yet told to go on (`body()` restarts its body clock when it is)."""
    return req.body_clock == req.received and req.headers.get("expect", "").lower() == "100-continue"


def _refusal(status: int, why: bytes, date: bytes) -> bytes:
    return b"HTTP/1.1 %d %b\r\n%bcontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b" % (
        status,
        _REASONS.get(status, b""),
        date,
        len(why),
        why,
    )


class _Lifespan:
    """Runs an ASGI app's lifespan protocol (startup before serving, shutdown after)."""

    def __init__(self, app: Any, state: dict[str, Any]):
        self.app, self.state = app, state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started: asyncio.Future[None] | None = None
        self.stopped: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.supported = True

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self.started, self.stopped = loop.create_future(), loop.create_future()
        self.task = loop.create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.stopped is None:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except Exception as e:
            if self.started is not None and not self.started.done():
                # An app without lifespan support raises on the unknown scope type: serve without it.
                self.supported = False
                log.debug("ASGI app has no lifespan: %s", e)
                self.started.set_result(None)
            elif self.stopped is not None and not self.stopped.done():
                self.stopped.set_exception(e)

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        assert self.started is not None and self.stopped is not None
        if kind == "lifespan.startup.complete":
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self.started.set_exception(RuntimeError(f"startup failed: {message.get('message', '')}"))
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self.stopped.set_exception(RuntimeError(f"shutdown failed: {message.get('message', '')}"))


async def serve_forever(servers: list[Server], *, drain_seconds: float, on_stop: Callable[[], None]) -> None:
    """Start every server, wait for SIGTERM or SIGINT, call `on_stop` (readiness off), then drain and stop."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    started: list[Server] = []
    try:
        for s in servers:
            await s.start()
            started.append(s)
        await stopping.wait()
        on_stop()
    finally:
        await asyncio.gather(*(s.stop(drain_seconds) for s in reversed(started)))
