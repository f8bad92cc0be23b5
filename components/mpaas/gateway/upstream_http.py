"""A lean HTTP/1.1 keep-alive client for upstream calls: asyncio protocols and httptools' parser.

The gateway's calls are simple (known endpoints, bodies in memory, no
redirects, no cookies), so a general client's per-request machinery is
overhead. Errors say how far a request got, which decides whether it may be
retried: `ConnectFailed` (nothing was sent) or `UpstreamBroken` (it may have
arrived).

Bounded like the server side: at most `max_connections` per endpoint, idle
and busy together (a request that finds them all busy waits up to
`connect_timeout` for one, then fails with `EndpointBusy`), and at most
`max_response_bytes` of an answer, head and body (`ResponseTooLarge`).
Header names that repeat in an answer are joined with ", ", but for `set-cookie`: a list.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# Defined outside this module: it is compiled (mpaas.compiled), and compiled classes cannot extend built-in exceptions.
from .upstream_errors import ConnectFailed, EndpointBusy, ResponseTooLarge, UpstreamBroken

__all__ = ["ConnectFailed", "EndpointBusy", "Response", "ResponseTooLarge", "UpstreamBroken", "UpstreamClient"]


class Response:
    """An upstream's answer (a plain class: a frozen dataclass costs ~3x as much to make, once per request)."""

    __slots__ = ("content", "cookies", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], content: bytes, cookies: list[str] | None = None) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.content = content
        self.cookies = cookies  # every set-cookie value, in order (None: there were none)


class _Pool:
    """One endpoint's connections: the idle ones, how many are open, who waits for one."""

    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, pool: _Pool, max_bytes: int) -> None:
        self.loop = loop  # kept: asyncio.get_running_loop() makes a getpid() system call each time
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.counted = True  # in pool.open until the connection is lost
        self.got_bytes = False
        self.received = 0  # bytes of the answer in hand, head and body
        self.max_bytes = max_bytes
        self._headers: dict[str, str] = {}
        self._cookies: list[str] | None = None
        self._body: list[bytes] = []
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.received += len(data)
        if self.received > self.max_bytes:
            self._fail(ResponseTooLarge(f"the answer is over {self.max_bytes} bytes"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(UpstreamBroken(f"malformed response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.counted:
            self.counted = False
            self.pool.open -= 1
            self.pool.wake()
        self._fail(UpstreamBroken(f"connection closed{f': {exc}' if exc else ''}"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body, self._cookies = {}, [], None

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key == "set-cookie":  # the one response header that repeats and is passed on
            if self._cookies is None:
                self._cookies = []
            self._cookies.append(value.decode("latin-1"))
        else:  # a repeated name: its values joined, as RFC 9110 5.3 allows
            text = value.decode("latin-1")
            seen = self._headers.get(key)
            self._headers[key] = text if seen is None else f"{seen}, {text}"

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if not self.parser.should_keep_alive():
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            body = self._body
            content = body[0] if len(body) == 1 else b"".join(body)
            self.waiter.set_result(Response(status, self._headers, content, self._cookies))


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    authority: bytes
    path_prefix: str


class UpstreamClient:
    """Keep-alive connections per endpoint: at most `max_connections` open (idle and busy), `max_idle` idle.

    Idle connections older than `idle_seconds` are not reused: servers close idle
    keep-alive connections after a few seconds (uvicorn: 5 s), and a request sent
    just as the server closes would fail.
    """

    def __init__(
        self,
        *,
        max_idle: int = 256,
        connect_timeout: float = 3.0,
        idle_seconds: float = 2.0,
        max_connections: int = 512,
        max_response_bytes: int = 16 << 20,
    ):
        self.max_idle, self.connect_timeout, self.idle_seconds = max_idle, connect_timeout, idle_seconds
        self.max_connections, self.max_response_bytes = max_connections, max_response_bytes
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._targets: dict[str, _Target] = {}

    def _target(self, base: str) -> _Target:
        t = self._targets.get(base)
        if t is None:
            u = urlsplit(base)
            if u.scheme != "http" or not u.hostname:
                raise ValueError(f"only http:// upstreams use the lean client, not {base!r}")
            port = u.port or 80
            t = _Target(u.hostname, port, f"{u.hostname}:{port}".encode(), u.path.rstrip("/"))
            self._targets[base] = t
        return t

    async def _connect(self, t: _Target, pool: _Pool) -> _Connection:
        """A new connection, counted in `pool.open` from now until it is lost."""
        loop = asyncio.get_running_loop()
        limit = self.max_response_bytes
        pool.open += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop, pool, limit), t.host, t.port), self.connect_timeout
            )
        except BaseException as e:
            pool.open -= 1
            pool.wake()
            if isinstance(e, (OSError, TimeoutError)):
                raise ConnectFailed(f"{t.host}:{t.port}: {e}") from e
            raise
        return conn

    async def _free(self, t: _Target, pool: _Pool) -> None:
        """Wait until a connection of `pool` comes back or closes; EndpointBusy after `connect_timeout`."""
        waiter = asyncio.get_running_loop().create_future()
        pool.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.connect_timeout)
        except TimeoutError:
            raise EndpointBusy(
                f"{t.host}:{t.port}: all {self.max_connections} connections busy for {self.connect_timeout:.1f} s"
            ) from None
        finally:
            if not waiter.done():
                waiter.cancel()

    async def request(
        self,
        method: str,
        base: str,
        path: str,
        *,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        query: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109 - a timer on the future is cheaper than asyncio.timeout
        idempotent: bool = False,
    ) -> Response:
        t = self._target(base)
        target = t.path_prefix + path + (f"?{query}" if query else "")
        lines = "\r\n".join(map(": ".join, headers))  # the joins loop in C; names may repeat (cookie)
        # One line per header, each name without a colon: a stray CR, LF or ":" would change the message.
        breaks = len(headers) - 1 if headers else 0
        if lines.count("\n") != breaks or lines.count("\r") != breaks or ":" in "".join([k for k, _ in headers]):
            raise ValueError("a header name or value would break the request's structure")
        payload = b"%s %s HTTP/1.1\r\nhost: %s\r\n%s%scontent-length: %d\r\n\r\n%s" % (
            method.encode(),
            target.encode(),
            t.authority,
            lines.encode("latin-1", "replace"),
            b"\r\n" if headers else b"",
            len(body),
            body,
        )
        key = (t.host, t.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool()
        idle = pool.idle
        while True:
            reused = bool(idle)
            if reused:
                conn = idle.pop()
            elif pool.open < self.max_connections:
                conn = await self._connect(t, pool)
            else:
                await self._free(t, pool)
                continue
            if conn.closed:
                continue
            loop = conn.loop
            if reused and loop.time() - conn.idle_since > self.idle_seconds:
                conn._fail(UpstreamBroken("idle too long"))
                continue
            conn.waiter = loop.create_future()
            conn.got_bytes = False
            conn.received = 0
            assert conn.transport is not None
            conn.transport.write(payload)
            timer = loop.call_later(timeout, _expire, conn.waiter)
            try:
                try:
                    resp = await conn.waiter
                finally:
                    timer.cancel()
                    conn.waiter = None
            except UpstreamBroken:
                if reused and not conn.got_bytes and idempotent:
                    continue  # most likely a keep-alive connection the upstream had just closed
                raise
            except BaseException:  # timeout, cancellation: the connection's state is unknown, drop it
                conn._fail(UpstreamBroken("abandoned"))
                raise
            if not conn.closed and len(idle) < self.max_idle:
                conn.idle_since = loop.time()
                idle.append(conn)
                if pool.waiters:
                    pool.wake()
            elif conn.transport is not None:
                conn.transport.close()
            return resp

    async def close(self) -> None:
        for pool in self._pools.values():
            for c in pool.idle:
                if c.transport is not None:
                    c.transport.close()
            pool.idle.clear()
        self._pools.clear()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
