"""File replies of the lean HTTP/1.1 server: sendfile(2) on asyncio's loop, a buffer with flow control on
uvloop's; whole and partial files, HEAD, pipelined requests after a file, a client that stops reading, and the
file closed in every case."""

import asyncio
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from mpaas.http1 import FileBody, Limits, Request, Server

pytestmark = pytest.mark.unit

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    more: list[tuple[str, str]] | None = None
    file: FileBody | None = None


def run(loop: str, scenario: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(scenario())


class Files:
    def __init__(self, path: Path):
        self.path = path
        self.opened: list[Any] = []

    async def handler(self, req: Request) -> Reply:
        f = self.path.open("rb")
        self.opened.append(f)
        size = self.path.stat().st_size
        if req.path == "/part":
            return Reply(206, {"Content-Range": f"bytes 100-199/{size}"}, file=FileBody(f, 100, 100))
        if req.path == "/broken":  # a header with a line break: the file is never sent, and closed
            return Reply(200, {"X-Bad": "a\r\nb"}, file=FileBody(f, 0, size))
        return Reply(200, {"Content-Type": "application/octet-stream"}, file=FileBody(f, 0, size))


async def lifespan_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while scope["type"] == "lifespan":
        msg = await receive()
        await send({"type": msg["type"] + ".complete"})
        if msg["type"] == "lifespan.shutdown":
            return


async def serve(files: Files, limits: Limits | None = None) -> Server:
    server = Server(lifespan_only, "127.0.0.1", 0, router=lambda p: files.handler, limits=limits)
    await server.start()
    return server


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "package.bin"
    path.write_bytes(os.urandom(20 * 1024 * 1024 + 7))
    return path


@pytest.mark.parametrize("loop", LOOPS)
def test_files_whole_and_in_part_then_pipelined_requests(loop: str, big: Path) -> None:
    files = Files(big)
    data = big.read_bytes()

    async def scenario() -> None:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /part HTTP/1.1\r\nhost: x\r\n\r\n"
            b"HEAD /whole HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /whole HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(data)}".encode() in head
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 206") and body == data[100:200]
        head = await reader.readuntil(b"\r\n\r\n")  # HEAD: the length, no body
        assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(data)}".encode() in head
        head, body = await read_response(reader)
        assert body == data and b"connection: close" in head
        assert await reader.read() == b""
        writer.close()
        await server.stop(1)

    run(loop, scenario)
    assert len(files.opened) == 4 and all(f.closed for f in files.opened)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_stops_reading_is_cut_off_and_the_file_closed(loop: str, big: Path) -> None:
    files = Files(big)
    limits = Limits(send_timeout_seconds=0.5, min_send_rate=100 * 1024 * 1024)  # 20 MiB: about 0.7 s

    async def scenario() -> float:
        server = await serve(files, limits)
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
        started = asyncio.get_running_loop().time()
        for _ in range(100):  # never reads: the server's send budget runs out
            await asyncio.sleep(0.1)
            if not server.connections:
                break
        took = asyncio.get_running_loop().time() - started
        writer.close()
        await server.stop(1)
        return took

    took = run(loop, scenario)
    assert took < 5, "the connection of a client that does not read was kept"
    assert files.opened and all(f.closed for f in files.opened)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reply_refused_for_its_head_closes_its_file(loop: str, big: Path) -> None:
    files = Files(big)

    async def scenario() -> bytes:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /broken HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body = await read_response(reader)
        writer.close()
        await server.stop(1)
        return head + body

    got = run(loop, scenario)
    assert got.startswith(b"HTTP/1.1 500") and got.endswith(b"internal error")
    assert all(f.closed for f in files.opened)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_leaves_mid_file_frees_the_file_and_the_connection(loop: str, big: Path) -> None:
    files = Files(big)

    async def scenario() -> int:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(1024 * 1024)
        writer.transport.abort()  # gone, mid-file
        for _ in range(50):
            await asyncio.sleep(0.1)
            if not server.connections and all(f.closed for f in files.opened):
                break
        left = len(server.connections)
        await server.stop(1)
        return left

    assert run(loop, scenario) == 0
    assert all(f.closed for f in files.opened)


class Short(Files):
    """Announces more bytes than the file holds (a package truncated on disk while it is sent)."""

    async def handler(self, req: Request) -> Reply:
        f = self.path.open("rb")
        self.opened.append(f)
        size = self.path.stat().st_size
        return Reply(200, {}, file=FileBody(f, 0, size + 1000))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_file_shorter_than_announced_ends_the_connection(loop: str, big: Path) -> None:
    files = Short(big)

    async def scenario() -> bytes:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        got = b""
        try:
            async with asyncio.timeout(5):
                while chunk := await reader.read(1 << 20):
                    got += chunk
        finally:
            writer.close()
            await server.stop(1)
        return got

    got = run(loop, scenario)
    # The connection ends short of the announced length: the next answer never lands inside this body.
    assert got.count(b"HTTP/1.1 200") == 1 and len(got) < big.stat().st_size + 1000 + 200
    assert all(f.closed for f in files.opened)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_stalls_after_a_fast_start_is_cut_off(loop: str, tmp_path: Path) -> None:
    # 200 MiB at a minimum of 2 MiB/s is a 100 s budget in all; a client that stops reading after its
    # first megabytes is dropped once a piece (SEND_PIECE, 2.5 s each) makes no progress.
    path = tmp_path / "huge.bin"
    with path.open("wb") as f:
        f.truncate(200 * 1024 * 1024)
    files = Files(path)
    limits = Limits(send_timeout_seconds=0.5, min_send_rate=2 * 1024 * 1024)

    async def scenario() -> float:
        server = await serve(files, limits)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        writer.write(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readexactly(4 * 1024 * 1024)
        writer.transport.pause_reading()  # stops reading, connection open
        started = asyncio.get_running_loop().time()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not server.connections:
                break
        took = asyncio.get_running_loop().time() - started
        writer.close()
        await server.stop(1)
        return took

    took = run(loop, scenario)
    assert took < 6, "a stalled client kept its connection for the whole file's budget"
    assert all(f.closed for f in files.opened)


@pytest.mark.parametrize("loop", LOOPS)
def test_stopping_with_a_file_in_flight_closes_the_connection_once_it_is_sent(loop: str, big: Path) -> None:
    files = Files(big)

    async def scenario() -> tuple[bytes, float]:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        loop_ = asyncio.get_running_loop()
        started = loop_.time()
        stopping = asyncio.create_task(server.stop(10))
        await asyncio.sleep(0.2)
        rest = await reader.read(-1)  # the whole file, then the end of the connection
        await stopping
        writer.close()
        return rest, loop_.time() - started

    rest, took = run(loop, scenario)
    assert len(rest) == big.stat().st_size
    assert took < 5, "the drain waited its whole time for a connection idle after its file"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_pipelined_behind_a_slow_file_is_not_timed_out(loop: str, big: Path) -> None:
    files = Files(big)
    limits = Limits(head_timeout_seconds=1.0, body_timeout_seconds=1.0)

    async def scenario() -> list[bytes]:
        server = await serve(files, limits)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # A second request's head arrives in part while the first one's file is being sent.
        writer.write(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\nGET /part HTTP/1.1\r\n")
        heads = [await reader.readuntil(b"\r\n\r\n")]
        left = big.stat().st_size
        while left > 8 << 20:  # slowly, about 2.5 s; then the rest (what the kernel holds) at once
            chunk = await reader.read(256 * 1024)
            left -= len(chunk)
            await asyncio.sleep(0.05)
        await reader.readexactly(left)
        writer.write(b"host: x\r\n\r\n")
        head, _body = await read_response(reader)
        heads.append(head)
        writer.close()
        await server.stop(1)
        return heads

    heads = run(loop, scenario)
    assert heads[0].startswith(b"HTTP/1.1 200") and heads[1].startswith(b"HTTP/1.1 206"), heads[1]


class HeadRaises(Files):
    async def handler(self, req: Request) -> Reply:
        f = self.path.open("rb")
        self.opened.append(f)
        return Reply(200, {"X-Bad": 7}, file=FileBody(f, 0, 10))  # type: ignore[dict-item]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reply_whose_head_cannot_be_made_sends_no_file(loop: str, big: Path) -> None:
    files = HeadRaises(big)

    async def scenario() -> bytes:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body = await read_response(reader)
        writer.close()
        await server.stop(1)
        return head + body

    got = run(loop, scenario)
    assert got.startswith(b"HTTP/1.1 500") and got.endswith(b"internal error")
    assert all(f.closed for f in files.opened)


class NotModified(Files):
    async def handler(self, req: Request) -> Reply:
        return Reply(304, {"ETag": '"x"'})


def test_a_304_carries_no_content_length(big: Path) -> None:
    async def scenario() -> bytes:
        server = await serve(NotModified(big))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\nGET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        heads = await reader.readuntil(b"\r\n\r\n") + await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await server.stop(1)
        return heads

    heads = run("asyncio", scenario)
    # RFC 9110 8.6: a 304's Content-Length, if any, is the full representation's; 0 would be wrong.
    assert heads.count(b"HTTP/1.1 304") == 2 and b"content-length" not in heads.lower()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_drain_that_runs_out_mid_file_ends_the_send_cleanly(
    loop: str, big: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = Files(big)

    async def scenario() -> bytes:
        server = await serve(files)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(1 << 20)
        await server.stop(0.3)  # the client reads no more: the file is still going out
        for _ in range(20):
            await asyncio.sleep(0.05)
            if all(f.closed for f in files.opened):
                break
        rest = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(1 << 20):
                rest += chunk
        writer.close()
        return rest

    rest = run(loop, scenario)
    assert len(rest) < big.stat().st_size  # cut off, and the connection ended
    assert all(f.closed for f in files.opened)
    # Closing the socket under asyncio's sendfile made its transport fail ("Exception in callback").
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
