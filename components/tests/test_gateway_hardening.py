"""The gateway behind its HTTP/1.1 server, over real sockets on 127.0.0.1, against malformed and hostile input.

A regression corpus of heads, each with the answer it must get (an HTTP status from the server, or a result
code from the pipeline), and the identity rules: what the upstream learns of who calls is what the gateway
checked, never a client's second copy of a header.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from mpaas.config import LiveConfig
from mpaas.gateway.app import GatewayASGI, create_app
from mpaas.gateway.settings import GatewaySettings
from mpaas.gateway.stages.route import EMPTY, KIND, SECRET, RouteTable, compiler
from mpaas.http1 import Limits, Server

pytestmark = pytest.mark.unit


class Upstream:
    """Records each request head it gets; answers with two cookies, or a body too large when asked.

    Other tests subclass it and override `answer`."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")),
                    0,
                )
                await reader.readexactly(length)
                self.heads.append(head)
                writer.write(self.answer(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, head: bytes) -> bytes:
        body = b"x" * 70000 if b" /big" in head.split(b"\r\n")[0] else b'{"ok":true}'
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(body), body)
        )

    def got(self, name: bytes) -> list[bytes]:
        """Values of header `name` in the last request."""
        lines = self.heads[-1].split(b"\r\n")[1:]
        return [v.strip() for n, _, v in (x.partition(b":") for x in lines) if n.lower() == name]


def config(upstream_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{upstream_port}"
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": "hard", "namespace": "default", "resourceVersion": "1", "generation": 1},
        "spec": {
            "maxBodyBytes": 65536,
            "apps": [
                {"appId": "OPEN", "workspaceId": "w"},
                {"appId": "PRIVILEGED", "workspaceId": "w"},
                {
                    "appId": "SIGNED",
                    "workspaceId": "w",
                    "credentialsSecretRef": {"name": "keys"},
                    "signature": {"algorithm": "HmacSha256", "requireNonce": True},
                },
            ],
            "upstreams": [
                {"name": "main", "endpoints": [{"url": url}]},
                {"name": "canary", "endpoints": [{"url": url}]},
            ],
            "sessionValidation": {"upstream": "main", "path": "/session", "header": "X-Session"},
            "apis": [
                {"operationType": "open.op", "upstream": "main", "path": "/op"},
                {"operationType": "big.op", "upstream": "main", "path": "/big"},
                {"operationType": "admin.op", "upstream": "main", "path": "/admin", "apps": ["PRIVILEGED"]},
                {"operationType": "mock.op", "upstream": "main", "mock": {"template": True, "body": {"x": 1}}},
                {
                    "operationType": "canary.op",
                    "upstream": "main",
                    "path": "/op",
                    "canary": {
                        "upstream": "canary",
                        "rule": "DEVICE_ID MOD 100 IN (0..49) || USER_ID >= 5 || APP_VERSION >= 2.1"
                        " || OS_VERSION < 3 || DEVICE_ID IN (1..9)",
                    },
                },
            ],
        },
    }


@pytest_asyncio.fixture
async def gw() -> AsyncIterator[tuple[Server, Upstream]]:
    up = Upstream()
    up_server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up.port = up_server.sockets[0].getsockname()[1]
    live: LiveConfig[RouteTable] = LiveConfig("hard", [KIND, SECRET], compiler("default", "hard"), EMPTY)
    live.on_snapshot(
        SECRET,
        {
            ("default", "keys"): {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "keys", "namespace": "default", "resourceVersion": "1"},
                "data": {"hmacKey": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="},
            }
        },
    )
    live.on_snapshot(KIND, {("default", "hard"): config(up.port)})
    assert live.current is not EMPTY
    settings = GatewaySettings(
        digest_log=False,
        head_timeout_seconds=0.5,
        body_timeout_seconds=0.5,
        max_head_bytes=4096,
        max_headers=40,
        upstream_max_response_bytes=65536,
    )
    app: GatewayASGI = create_app(settings, live)
    assert isinstance(app.server_limits, Limits) and app.server_limits.max_head_bytes == 4096
    server = Server(app, "127.0.0.1", 0, router=app.route, body_limit=app.body_limit)  # limits from the app
    await server.start()
    yield server, up
    await server.stop(1.0)
    up_server.close()


async def exchange(port: int, data: bytes, seconds: float = 3) -> bytes:
    """Send `data`, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(1 << 20), seconds) + await asyncio.wait_for(reader.read(), seconds)
    finally:
        writer.close()


def rpc(*headers: str, body: bytes = b"{}", close: bool = True, version: bytes = b"1.1") -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers).encode("latin-1")
    return (
        b"POST /mgw.htm HTTP/%b\r\nhost: gw\r\ncontent-type: application/json\r\n%b%bcontent-length: %d\r\n\r\n%b"
        % (version, lines, b"connection: close\r\n" if close else b"", len(body), body)
    )


def answer(raw: bytes) -> str:
    """`HTTP status` for the server's own answers, `Result-Status` for the pipeline's."""
    status = raw.split(b" ", 2)[1].decode() if raw.startswith(b"HTTP/1.1 ") else "none"
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"result-status:"):
            return line.split(b":", 1)[1].strip().decode()
    return status


OPEN = ("Operation-Type: open.op", "AppId: OPEN", "WorkspaceId: w")
BIG_HEAD = "X-Big: " + "a" * 5000
# name, request bytes, expected answer: an HTTP status from the server, or a result code from the pipeline.
CORPUS: list[tuple[str, bytes, str]] = [
    ("plain request", rpc(*OPEN), "1000"),
    ("duplicate Content-Length", rpc(*OPEN, "Content-Length: 2"), "400"),
    (
        "conflicting Content-Length",
        b"POST /mgw.htm HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
        "400",
    ),
    (
        "Transfer-Encoding with Content-Length",
        b"POST /mgw.htm HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n0\r\n\r\n",
        "400",
    ),
    ("Transfer-Encoding twice", b"POST /mgw.htm HTTP/1.1\r\ntransfer-encoding: chunked, chunked\r\n\r\n", "400"),
    ("Transfer-Encoding not chunked", b"POST /mgw.htm HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", "400"),
    (
        "HTTP/1.0 with Transfer-Encoding",
        b"POST /mgw.htm HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "400",
    ),
    ("malformed chunk size", b"POST /mgw.htm HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nxyz\r\n", "400"),
    ("bare CR in a header", b"POST /mgw.htm HTTP/1.1\r\nAppId: OPEN\rWorkspaceId: w\r\n\r\n", "400"),
    ("bare LF line ends", b"POST /mgw.htm HTTP/1.1\nAppId: OPEN\n\n", "400"),
    ("obs-fold", b"POST /mgw.htm HTTP/1.1\r\nAppId: OPEN\r\n PRIVILEGED\r\n\r\n", "400"),
    ("space before the colon", b"POST /mgw.htm HTTP/1.1\r\nAppId : OPEN\r\n\r\n", "400"),
    ("huge header", rpc(*OPEN, BIG_HEAD), "431"),
    ("huge request line", b"POST /mgw.htm?" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", "431"),
    ("too many headers", rpc(*OPEN, *(f"X-{i}: 1" for i in range(40))), "431"),
    ("AppId twice", rpc("Operation-Type: admin.op", "AppId: OPEN", "AppId: PRIVILEGED", "WorkspaceId: w"), "3005"),
    ("WorkspaceId twice", rpc(*OPEN, "WorkspaceId: other"), "3005"),
    ("Operation-Type twice", rpc(*OPEN, "Operation-Type: admin.op"), "3005"),
    ("Ts twice", rpc(*OPEN, "Ts: 1", "Ts: 2"), "3005"),
    ("Nonce twice", rpc(*OPEN, "Nonce: a", "Nonce: b"), "3005"),
    ("Sign twice", rpc(*OPEN, "Sign: a", "Sign: b"), "3005"),
    ("session header twice", rpc(*OPEN, "X-Session: a", "X-Session: b"), "3005"),
    ("Did twice", rpc(*OPEN, "Did: 1", "Did: 2"), "3005"),
    ("Content-Type twice", rpc(*OPEN, "Content-Type: text/plain"), "3005"),
    ("Cookie twice is fine", rpc(*OPEN, "Cookie: a=1", "Cookie: b=2"), "1000"),
    ("Content-Length superscript two", b"POST /mgw.htm HTTP/1.1\r\ncontent-length: \xb2\r\n\r\n{}", "400"),
    ("Content-Length with a plus", b"POST /mgw.htm HTTP/1.1\r\ncontent-length: +2\r\n\r\n{}", "400"),
    ("Content-Length 5000 digits", b"POST /mgw.htm HTTP/1.1\r\ncontent-length: " + b"9" * 5000 + b"\r\n\r\n", "400"),
    ("Content-Length 30 digits", b"POST /mgw.htm HTTP/1.1\r\ncontent-length: " + b"9" * 30 + b"\r\n\r\n", "400"),
    (
        "Ts superscript",
        rpc("Operation-Type: open.op", "AppId: SIGNED", "WorkspaceId: w", "Sign: x", "Ts: \xb2"),
        "7003",
    ),
    (
        "Ts 5000 digits",
        rpc("Operation-Type: open.op", "AppId: SIGNED", "WorkspaceId: w", "Sign: x", "Ts: " + "9" * 3000),
        "7003",
    ),
    (
        "Ts Arabic digits",
        rpc("Operation-Type: open.op", "AppId: SIGNED", "WorkspaceId: w", "Sign: x", "Ts: 1 2"),
        "7003",
    ),
    (
        "Did superscript on a canary rule",
        rpc("Operation-Type: canary.op", "AppId: OPEN", "WorkspaceId: w", "Did: \xb2"),
        "1000",
    ),
    (
        "Did 3000 digits on a canary rule",
        rpc("Operation-Type: canary.op", "AppId: OPEN", "WorkspaceId: w", "Did: " + "9" * 3000),
        "1000",
    ),
    (
        "Uid superscript on a canary rule",
        rpc("Operation-Type: canary.op", "AppId: OPEN", "WorkspaceId: w", "Uid: \xb9\xb2"),
        "1000",
    ),
    (
        "App-Version superscript",
        rpc("Operation-Type: canary.op", "AppId: OPEN", "WorkspaceId: w", "App-Version: 2.\xb2"),
        "1000",
    ),
    (
        "App-Version 3000 digits",
        rpc("Operation-Type: canary.op", "AppId: OPEN", "WorkspaceId: w", "App-Version: 1." + "9" * 3000),
        "1000",
    ),
    (
        "Os-Version superscript",
        rpc("Operation-Type: canary.op", "AppId: OPEN", "WorkspaceId: w", "Os-Version: \xb3"),
        "1000",
    ),
    ("JSON nested 1000 deep", rpc(*OPEN, body=b"[" * 1000 + b"]" * 1000), "3004"),
    ("JSON nested 100000 deep, unclosed", rpc(*OPEN, body=b"[" * 60000), "3004"),
    ("JSON nested 128 deep", rpc(*OPEN, body=b"[" * 128 + b"]" * 128), "1000"),
    ("upper-case media type", rpc(*OPEN, body=b"{x").replace(b"application/json", b"Application/JSON"), "3004"),
    (
        "deep JSON to a mock, as text",
        rpc("Operation-Type: mock.op", "AppId: OPEN", "WorkspaceId: w", body=b"[" * 5000).replace(
            b"application/json", b"text/plain"
        ),
        "1000",
    ),
    ("upstream answer too large", rpc("Operation-Type: big.op", "AppId: OPEN", "WorkspaceId: w"), "4005"),
]


@pytest.mark.parametrize(("name", "data", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_regression_corpus(gw: tuple[Server, Upstream], name: str, data: bytes, expected: str) -> None:
    server, _ = gw
    got = await exchange(server.port, data)
    assert answer(got) == expected, got[:300]
    assert b"connection: close" in got.split(b"\r\n\r\n")[0] or expected in ("1000", "3004", "3005", "4005", "7003")


async def test_corpus_slow_head_is_answered_408(gw: tuple[Server, Upstream]) -> None:
    server, _ = gw
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for ch in rpc(*OPEN):
        if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
            break
        try:
            writer.write(bytes([ch]))
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    got = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert answer(got) == "408"


async def test_corpus_body_never_sent_is_answered_408(gw: tuple[Server, Upstream]) -> None:
    server, up = gw
    got = await exchange(server.port, rpc(*OPEN, body=b"{}").replace(b"content-length: 2", b"content-length: 90"))
    assert answer(got) == "408" and up.heads == []


async def test_the_upstream_learns_identity_from_the_gateway_not_the_client(gw: tuple[Server, Upstream]) -> None:
    server, up = gw
    sneaky = (
        "Operation-Type: open.op",
        "AppId: OPEN",
        "WorkspaceId: w",
        "App_Id: PRIVILEGED",
        "Operation_Type: admin.op",
        "X-User-Id: root",
        "X_User_Id: root",
        "Mgw-TraceId: 0123",
        "Cookie: a=1",
        "Cookie: b=2",
    )
    got = await exchange(server.port, rpc(*sneaky))
    assert answer(got) == "1000"
    assert up.got(b"appid") == [b"OPEN"] and up.got(b"workspaceid") == [b"w"]
    assert up.got(b"operation-type") == [b"open.op"] and up.got(b"operation_type") == []
    assert up.got(b"x-user-id") == [] and up.got(b"x_user_id") == []
    assert up.got(b"cookie") == [b"a=1", b"b=2"]  # repeated on the way in
    assert got.count(b"Set-Cookie: ") == 2 and b"Set-Cookie: a=1\r\n" in got  # and on the way out
    # The REST path names the operation: a header saying otherwise does not reach the upstream.
    rest = rpc("Operation-Type: admin.op", "AppId: OPEN", "WorkspaceId: w").replace(b"/mgw.htm", b"/api/open.op")
    got = await exchange(server.port, rest)
    assert answer(got) == "1000" and up.got(b"operation-type") == [b"open.op"]


async def test_a_privileged_second_appid_never_reaches_the_upstream(gw: tuple[Server, Upstream]) -> None:
    server, up = gw
    got = await exchange(
        server.port, rpc("Operation-Type: open.op", "AppId: OPEN", "AppId: PRIVILEGED", "WorkspaceId: w")
    )
    assert answer(got) == "3005" and b"appid" in got.lower() and up.heads == []


async def test_requests_after_a_closing_one_are_ignored_and_it_is_answered(gw: tuple[Server, Upstream]) -> None:
    server, up = gw
    follow = rpc(*OPEN, close=False)
    for first in (rpc(*OPEN), rpc(*OPEN, close=False, version=b"1.0")):
        before = len(up.heads)
        got = await exchange(server.port, first + follow + b"\x00junk")
        assert answer(got) == "1000" and got.count(b"HTTP/1.1 ") == 1 and len(up.heads) == before + 1
    # Pipelined, then junk: both executed requests are answered, then 400.
    before = len(up.heads)
    got = await exchange(server.port, follow + follow + b"\x00junk\r\n\r\n")
    assert got.count(b"Result-Status: 1000") == 2 and b"HTTP/1.1 400" in got and len(up.heads) == before + 2


def test_corpus_covers_every_number_header() -> None:
    names = {"content-length", "ts", "did", "uid", "app-version", "os-version"}
    covered = {n for n in names if any(f"{n}: ".encode() in d.lower() for _, d, _ in CORPUS)}
    assert covered == names
