"""The lean HTTP/1.1 server over real sockets: keep-alive, pipelining, chunked bodies, 100-continue,
limits, malformed requests, the ASGI fallback with its lifespan, and the drain on stop."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mpaas import http1
from mpaas.http1 import Headers, Limits, Request, Server

pytestmark = pytest.mark.unit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    more: list[tuple[str, str]] | None = None


@dataclass
class Asgi:
    """A tiny ASGI app with a lifespan, for the paths without a handler."""

    events: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                self.events.append(msg["type"])
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        body = (await receive())["body"]
        text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} {len(body)}".encode()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-asgi", b"yes")]})
        await send({"type": "http.response.body", "body": text, "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})


async def echo(req: Request) -> Reply:
    if req.path == "/early":  # answers without reading the body
        return Reply(403, {"X-Early": "1"})
    if req.path == "/slow":
        await asyncio.sleep(0.3)
    if req.path.startswith("/hbreak"):  # a header value with a stray line break (from the query)
        return Reply(200, {"X-Bad": req.query.replace("CR", "\r").replace("LF", "\n"), "X-Fine": "a: b"})
    body = await req.body(1000)
    if body is None:
        return Reply(413, {})
    return Reply(200, {"Content-Type": "text/plain", "X-Path": req.path, "X-Query": req.query}, body[::-1])


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    handled = ("/early", "/slow")
    s = Server(
        Asgi(),
        "127.0.0.1",
        0,
        router=lambda p: echo if p.startswith("/h") or p in handled else None,
        body_limit=lambda: 2000,  # the server stops keeping a body past this; the handler asks for at most 1000
    )
    s.keepalive_seconds = 1.0
    await s.start()
    yield s
    await s.stop(1.0)


async def exchange(port: int, data: bytes, *, until: Callable[[bytes], bool], seconds: float = 3) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(seconds):
            while not until(got):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        writer.close()
    return got


async def test_keepalive_and_handler_reply(server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
        for i in range(3):
            r = await c.post(f"/hello%20world?x={i}", content=b"abc")
            assert r.status_code == 200 and r.content == b"cba"
            assert r.headers["x-path"] == "/hello world" and r.headers["x-query"] == f"x={i}"
            assert "date" in r.headers
        assert len(server.connections) == 1  # one keep-alive connection carried all three


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    reqs = (
        b"".join(b"POST /h%d HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n%02d" % (i, i) for i in (1, 2, 3))
        + b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nz"
        + b"GET /h9 HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    got = await exchange(server.port, reqs, until=lambda b: b.count(b"HTTP/1.1 200") == 5)
    paths = [line.split(b": ")[1] for line in got.split(b"\r\n") if line.lower().startswith(b"x-path")]
    assert paths == [b"/h1", b"/h2", b"/h3", b"/slow", b"/h9"]
    assert b"\r\n\r\n10" in got and b"\r\n\r\n20" in got and b"\r\n\r\nz" in got


async def test_chunked_body_and_expect_continue(server: Server) -> None:
    chunked = b"POST /h HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    got = await exchange(server.port, chunked, until=lambda b: b.endswith(b"edcba"))
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"edcba")

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /h HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"xyz")
    final = await asyncio.wait_for(reader.readuntil(b"zyx"), 3)
    assert final.startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_body_limit_and_early_answer_close_the_connection(server: Server) -> None:
    big = b"POST /h HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n" + b"a" * 5000
    got = await exchange(server.port, big, until=lambda b: False)  # reads until the server closes
    assert got.startswith(b"HTTP/1.1 413") and b"connection: close" in got
    # Over the handler's limit but within the server's: the body was read whole, the connection stays usable.
    fits = b"POST /h HTTP/1.1\r\nhost: x\r\ncontent-length: 1500\r\n\r\n" + b"a" * 1500
    got = await exchange(server.port, fits * 2, until=lambda b: b.count(b"413") == 2)
    assert got.count(b"HTTP/1.1 413") == 2 and b"connection: close" not in got

    early = b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345"  # half a body
    got = await exchange(server.port, early, until=lambda b: False)
    assert got.startswith(b"HTTP/1.1 403") and b"connection: close" in got


async def test_http10_head_and_connection_close(server: Server) -> None:
    got = await exchange(server.port, b"POST /h HTTP/1.0\r\ncontent-length: 2\r\n\r\nab", until=lambda b: False)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ba") and b"connection: close" in got
    got = await exchange(
        server.port, b"HEAD /h HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", until=lambda b: False
    )
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"content-length: 0\r\nconnection: close\r\n\r\n")


async def test_malformed_request_gets_400(server: Server) -> None:
    got = await exchange(server.port, b"POST /h HTTP/1.1\r\ncontent-length: x\r\n\r\n", until=lambda b: False)
    assert got.startswith(b"HTTP/1.1 400 Bad Request") and b"malformed request" in got
    got = await exchange(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", until=lambda b: False)
    assert got.startswith(b"HTTP/1.1 400")


async def test_upgrade_request_is_answered_in_http1_then_closed(server: Server) -> None:
    req = (
        b"GET /h HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
        b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    got = await exchange(server.port, req, until=lambda b: False)
    assert got.startswith(b"HTTP/1.1 200") and b"X-Path: /h" in got and b"connection: close" in got


async def test_idle_connection_is_closed(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.read(), 3) == b""  # keepalive_seconds is 1
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /h HTTP/1.1\r\nhost: x\r\n")  # a head that never ends
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()


async def test_other_paths_go_to_the_asgi_app_with_its_lifespan(server: Server) -> None:
    app = server.app
    assert app.events == ["lifespan.startup"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
        r = await c.put("/other/path?q=1", content=b"12345")
    assert r.status_code == 201 and r.headers["x-asgi"] == "yes" and r.text == "PUT /other/path q=1 5!"
    await server.stop(1.0)
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_stop_drains_the_request_in_flight(server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
        slow = asyncio.create_task(c.post("/slow", content=b"ab"))
        await asyncio.sleep(0.1)
        await server.stop(3.0)
        r = await slow
        assert r.status_code == 200 and r.content == b"ba" and r.headers["connection"] == "close"
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            await c.post("/h", content=b"x")


async def test_stop_answers_what_idle_keepalive_clients_send_during_the_grace(server: Server) -> None:
    """A pod leaving its Service keeps getting requests on established connections: each is answered (closing
    the connection), never lost to a socket closed under it; an idle one is closed after the grace."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = b"POST /h HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab"
    writer.write(request)
    first = await reader.readuntil(b"ba")
    assert b"connection: close" not in first
    quiet_reader, quiet_writer = await asyncio.open_connection("127.0.0.1", server.port)
    quiet_writer.write(request)
    await quiet_reader.readuntil(b"ba")
    stopping = asyncio.create_task(server.stop(5.0))
    await asyncio.sleep(0.3)  # the server is stopping; the client does not know yet
    writer.write(request + request)  # two pipelined requests on the old connection
    rest = await asyncio.wait_for(reader.read(), 3)  # until the server closes
    assert rest.count(b"HTTP/1.1 200") == 2 and rest.count(b"connection: close") == 1 and rest.endswith(b"ba")
    started = time.monotonic()
    assert await asyncio.wait_for(quiet_reader.read(), 5) == b""  # the idle one closed, after the grace
    assert 0.5 < time.monotonic() - started + 0.3 < http1.IDLE_GRACE_SECONDS + 1
    await asyncio.wait_for(stopping, 5)
    writer.close()
    quiet_writer.close()


@pytest.mark.parametrize(("query", "status"), [("aLFb", 500), ("aCRb", 500), ("aCRLFX-Injected: 1", 500), ("ok", 200)])
async def test_a_header_with_a_line_break_never_leaves(server: Server, query: str, status: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        r = await client.get(f"/hbreak?{query}")
    assert r.status_code == status and "x-injected" not in r.headers
    if status == 200:
        assert r.headers["x-bad"] == "ok" and r.headers["x-fine"] == "a: b"


# --- limits and failures: what a client may hold, and answers never lost -------------------------------------

LIMITS = Limits(
    max_head_bytes=2048,
    max_headers=20,
    head_timeout_seconds=0.4,
    body_timeout_seconds=0.4,
    min_body_rate=1000,
    max_connections=4,
)


@pytest_asyncio.fixture
async def limited() -> AsyncIterator[Server]:
    s = Server(Asgi(), "127.0.0.1", 0, router=lambda p: echo if p.startswith("/h") else None, limits=LIMITS)
    await s.start()
    yield s
    await s.stop(1.0)


async def status_of(port: int, data: bytes, seconds: float = 3) -> bytes:
    """The whole exchange until the server closes (the test fails if it does not)."""
    return await exchange(port, data, until=lambda b: False, seconds=seconds)


async def test_a_huge_head_is_refused_431_whether_it_comes_at_once_or_in_pieces(limited: Server) -> None:
    got = await status_of(limited.port, b"GET /h HTTP/1.1\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 431") and b"connection: close" in got
    got = await status_of(limited.port, b"GET /h?" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 431")
    # A head that never ends, sent in pieces: refused once it passes the limit, not buffered on.
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"GET /h HTTP/1.1\r\nx-big: ")
    answer = b""
    for _ in range(200):
        try:
            writer.write(b"a" * 512)
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0)
        if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]
            break
    answer = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431")


async def test_too_many_headers_are_refused_431(limited: Server) -> None:
    head = b"GET /h HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(21)) + b"\r\n"
    got = await status_of(limited.port, head)
    assert got.startswith(b"HTTP/1.1 431") and b"too many headers" in got
    fine = b"GET /h HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(20)) + b"connection: close\r\n\r\n"
    assert (await status_of(limited.port, fine)).startswith(b"HTTP/1.1 431")  # 21 lines with connection
    fine = b"GET /h HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(19)) + b"connection: close\r\n\r\n"
    assert (await status_of(limited.port, fine)).startswith(b"HTTP/1.1 200")


async def test_a_slow_head_is_answered_408(limited: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    started = asyncio.get_running_loop().time()
    got = b""
    for ch in b"GET /h HTTP/1.1\r\nx-slow: 1234567890\r\n\r\n":
        if reader.at_eof():
            break
        try:
            writer.write(bytes([ch]))
        except ConnectionError:
            break
        await asyncio.sleep(0.05)  # each byte keeps the connection active, the head never completes in time
        if len(reader._buffer):  # type: ignore[attr-defined]
            break
    got = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert got.startswith(b"HTTP/1.1 408") and b"head" in got
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_body_never_sent_or_too_slow_is_answered_408(limited: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"POST /h HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab")  # 98 bytes never come
    got = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert got.startswith(b"HTTP/1.1 408") and b"body" in got
    # A body trickling below min_body_rate: 10 bytes/s against 1000 bytes/s after a 0.4 s grace.
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"POST /h HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
    for _ in range(30):
        if len(reader._buffer) or reader.at_eof():  # type: ignore[attr-defined]
            break
        try:
            writer.write(b"a")
        except ConnectionError:
            break
        await asyncio.sleep(0.1)
    got = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert got.startswith(b"HTTP/1.1 408")


async def test_connections_over_the_cap_get_503(limited: Server) -> None:
    held = [await asyncio.open_connection("127.0.0.1", limited.port) for _ in range(4)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    got = await asyncio.wait_for(reader.read(), 3)
    assert got.startswith(b"HTTP/1.1 503") and b"connection: close" in got
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    got = await status_of(limited.port, b"GET /h HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200")  # room again once they closed


@pytest.mark.parametrize(
    "after",
    [
        b"GET /h2 HTTP/1.1\r\n\r\n",  # a request after one that ends the connection
        b"\x00\x01junk",
    ],
)
async def test_a_request_that_ends_the_connection_is_answered_and_what_follows_ignored(
    server: Server, after: bytes
) -> None:
    got = await status_of(server.port, b"POST /h1 HTTP/1.1\r\nconnection: close\r\ncontent-length: 2\r\n\r\nab" + after)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ba") and got.count(b"HTTP/1.1") == 1
    got = await status_of(server.port, b"POST /h1 HTTP/1.0\r\ncontent-length: 2\r\n\r\nab" + after)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ba") and got.count(b"HTTP/1.1") == 1


async def test_pipelined_answers_come_before_the_refusal_of_junk(server: Server) -> None:
    reqs = b"POST /slow HTTP/1.1\r\ncontent-length: 1\r\n\r\nz" + b"GET /h9 HTTP/1.1\r\n\r\n" + b"\x00junk\r\n\r\n"
    got = await status_of(server.port, reqs)
    first, second, refusal = got.find(b"X-Path: /slow"), got.find(b"X-Path: /h9"), got.find(b"HTTP/1.1 400")
    assert 0 < first < second < refusal and got.count(b"HTTP/1.1 ") == 3, got


async def test_http10_with_transfer_encoding_is_refused_and_never_served(server: Server) -> None:
    smuggle = (
        b"POST /h1 HTTP/1.0\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
        b"GET /h2 HTTP/1.1\r\n\r\n"
    )
    got = await status_of(server.port, smuggle)
    assert got.startswith(b"HTTP/1.1 400") and b"X-Path" not in got and got.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nab\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"3;" + b"x" * 10 + b"\nabc\r\n0\r\n\r\n"],
)
async def test_a_malformed_chunked_body_is_answered_400(server: Server, body: bytes) -> None:
    got = await status_of(server.port, b"POST /h HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + body)
    assert got.startswith(b"HTTP/1.1 400") and b"connection: close" in got


async def test_repeated_headers_reach_the_handler_in_order() -> None:
    h = Headers([("cookie", "a=1"), ("appid", "A"), ("cookie", "b=2")])
    assert h.get("cookie") == "a=1" and h.repeated() == {"cookie"} and Headers([("a", "1")]).repeated() == set()


async def test_a_body_that_waits_for_100_continue_behind_a_slow_request_is_not_timed_out() -> None:
    """The body clock runs only once the client may send: a queued `Expect: 100-continue` request is told to go
    on when its handler reads, which may be long after the body deadline of a request sent at once."""

    async def handler(req: Request) -> Reply:
        if req.path == "/hwait":
            await asyncio.sleep(1.0)  # longer than the 0.4 s body deadline
        return await echo(req)

    s = Server(Asgi(), "127.0.0.1", 0, router=lambda p: handler if p.startswith("/h") else None, limits=LIMITS)
    await s.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(
            b"POST /hwait HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
            b"POST /h HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
        )
        got = await asyncio.wait_for(reader.readuntil(b"100 Continue\r\n\r\n"), 5)
        assert got.startswith(b"HTTP/1.1 200") and b"408" not in got
        writer.write(b"ab")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"ba"), rest
        writer.close()
    finally:
        await s.stop(1.0)
