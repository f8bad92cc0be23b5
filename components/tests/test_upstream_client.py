"""The lean upstream client against small in-process HTTP servers: reuse, stale connections, timeouts, errors."""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from conftest import closed_url
from mpaas.gateway.upstream_http import ConnectFailed, EndpointBusy, ResponseTooLarge, UpstreamClient

pytestmark = pytest.mark.unit


class Server:
    def __init__(self, respond: Callable[[int], bytes | None]):
        self.respond, self.connections, self.requests = respond, 0, 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                answer = self.respond(self.requests)
                if answer is None:  # hang: never answer
                    await asyncio.sleep(30)
                    return
                writer.write(answer)
                await writer.drain()
                if b"close-after" in answer:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[int], bytes | None]], object]]:
    servers = []

    async def start(respond: Callable[[int], bytes | None]) -> Server:
        s = Server(respond)
        srv = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        s.port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
        return s

    yield start  # type: ignore[misc]
    for srv in servers:
        srv.close()


async def test_keep_alive_reuses_one_connection(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda n: ok(b'{"n":%d}' % n))
    client = UpstreamClient()
    for i in range(1, 6):
        r = await client.request("POST", f"http://127.0.0.1:{s.port}", "/x", body=b"{}", headers=[("a", "b")])
        assert r.status == 200 and r.content == b'{"n":%d}' % i and r.headers["content-type"] == "application/json"
    assert s.connections == 1
    await client.close()


async def test_a_connection_the_server_closed_is_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda n: ok(extra=b"x-note: close-after\r\n"))
    client = UpstreamClient()
    for _ in range(3):
        r = await client.request("POST", f"http://127.0.0.1:{s.port}", "/x", body=b"", headers=[])
        assert r.status == 200
        await asyncio.sleep(0.05)  # let the close arrive
    assert s.connections == 3
    await client.close()


async def test_timeout_discards_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda n: None if n == 1 else ok())
    client = UpstreamClient()
    with pytest.raises(TimeoutError):
        await client.request("GET", f"http://127.0.0.1:{s.port}", "/slow", body=b"", headers={}, timeout=0.2)
    r = await client.request("GET", f"http://127.0.0.1:{s.port}", "/x", body=b"", headers=[])
    assert r.status == 200 and s.connections == 2  # a fresh connection, not the one stuck on the slow answer
    await client.close()


async def test_refused_connection_is_a_connect_failure() -> None:
    client = UpstreamClient(connect_timeout=1)
    with pytest.raises(ConnectFailed):
        await client.request("POST", closed_url(), "/", body=b"", headers=[])


@pytest.mark.parametrize(
    "bad",
    [
        [("x", "a\r\nGET /admin HTTP/1.1")],
        [("x", "a\nb")],
        [("x", "a\rb")],
        [("ok", "1"), ("x\r\ny", "b")],
        [("x:y", "b")],
    ],
)
async def test_headers_cannot_smuggle_lines(serve, bad: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda n: ok())
    client = UpstreamClient()
    with pytest.raises(ValueError):
        await client.request("POST", f"http://127.0.0.1:{s.port}", "/", body=b"", headers=bad)
    assert s.requests == 0
    r = await client.request("POST", f"http://127.0.0.1:{s.port}", "/", body=b"", headers=[("x", "a: b")])
    assert r.status == 200 and s.requests == 1  # a colon inside a value is fine
    await client.close()


async def test_repeated_headers_go_out_and_every_set_cookie_comes_back(serve) -> None:  # type: ignore[no-untyped-def]
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(ok(extra=b"set-cookie: a=1\r\nset-cookie: b=2\r\n"))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = UpstreamClient()
    port = srv.sockets[0].getsockname()[1]
    r = await client.request(
        "POST", f"http://127.0.0.1:{port}", "/", body=b"", headers=[("cookie", "a=1"), ("cookie", "b=2")]
    )
    assert b"cookie: a=1\r\ncookie: b=2\r\n" in seen[0]
    assert r.cookies == ["a=1", "b=2"] and "set-cookie" not in r.headers
    await client.close()
    srv.close()


async def test_an_answer_over_the_limit_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda n: ok(b"x" * 5000) if n == 1 else ok())
    client = UpstreamClient(max_response_bytes=4096)
    with pytest.raises(ResponseTooLarge):
        await client.request("GET", f"http://127.0.0.1:{s.port}", "/", body=b"", headers=[])
    r = await client.request("GET", f"http://127.0.0.1:{s.port}", "/", body=b"", headers=[])
    assert r.status == 200 and s.connections == 2  # the oversized answer's connection was dropped


async def test_an_endless_head_is_refused_too() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx-long: ")
        try:
            for _ in range(100):
                writer.write(b"a" * 1000)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = UpstreamClient(max_response_bytes=4096)
    with pytest.raises(ResponseTooLarge):
        await client.request("GET", f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", "/", body=b"", headers=[])
    await client.close()
    srv.close()


async def test_connections_per_endpoint_are_capped(serve) -> None:  # type: ignore[no-untyped-def]

    s = await serve(lambda n: None if n <= 2 else ok())  # the first two hang
    client = UpstreamClient(max_connections=2, connect_timeout=0.3)
    url = f"http://127.0.0.1:{s.port}"
    hung = [asyncio.create_task(client.request("GET", url, "/", body=b"", headers=[], timeout=5)) for _ in range(2)]
    await asyncio.sleep(0.1)
    with pytest.raises(EndpointBusy):  # a ConnectFailed: nothing was sent, another endpoint may take it
        await client.request("GET", url, "/", body=b"", headers=[])
    assert s.connections == 2
    for t in hung:
        t.cancel()
    await asyncio.gather(*hung, return_exceptions=True)
    await asyncio.sleep(0.05)  # the cancelled requests' connections close
    r = await client.request("GET", url, "/", body=b"", headers=[])
    assert r.status == 200 and s.connections == 3
    await client.close()


async def test_a_waiting_request_takes_the_connection_that_comes_back(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda n: ok(b'{"n":%d}' % n))
    client = UpstreamClient(max_connections=1, connect_timeout=2)
    url = f"http://127.0.0.1:{s.port}"
    rs = await asyncio.gather(*(client.request("GET", url, "/", body=b"", headers=[]) for _ in range(5)))
    assert sorted(r.content for r in rs) == [b'{"n":%d}' % i for i in range(1, 6)] and s.connections == 1
    await client.close()
