"""Whom the gateway trusts and what it passes on, behind its HTTP/1.1 server over real sockets on 127.0.0.1.

A gateway serves only apps it knows; a deleted Secret revokes its key at once; the response cache never hands
one caller's answer to another; the upstream's answer headers reach the client as documented (docs/gateway.md).
"""

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from test_gateway_hardening import Upstream as HardeningUpstream

from mpaas.config import LiveConfig, Resource, unlisted
from mpaas.crypto.signing import canonical
from mpaas.gateway.app import GatewayASGI, create_app
from mpaas.gateway.settings import GatewaySettings
from mpaas.gateway.stages.route import EMPTY, KIND, SECRET, RouteTable, compiler
from mpaas.http1 import Server
from mpaas.keyring import KeyRing

pytestmark = pytest.mark.unit

KEY_A, KEY_B = b"a" * 32, b"b" * 32
# What /headers answers besides its body: every header the docs list as passed on, X-* ones, and some never.
RICH = [
    ("Set-Cookie", "s=1; HttpOnly"),
    ("Set-Cookie", "t=2"),
    ("Cache-Control", "max-age=60"),
    ("Location", "/elsewhere"),
    ("Retry-After", "120"),
    ("ETag", '"v1"'),
    ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ("Content-Language", "zh-CN"),
    ("Content-Disposition", 'attachment; filename="a.txt"'),
    ("Vary", "Accept-Language"),
    ("Expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
    ("WWW-Authenticate", 'Bearer realm="a"'),
    ("WWW-Authenticate", 'Basic realm="b"'),
    ("X-Request-Id", "r-1"),
    ("X-Rate-Remaining", "9"),
    # never passed on: hop-by-hop, or what the gateway says itself
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authenticate", "Basic"),
    ("Upgrade", "h2c"),
    ("Trailer", "X-Late"),
    ("Mgw-Encrypted", "1"),
    ("Mgw-TraceId", "f" * 32),
    ("Memo", "from the upstream"),
    ("X-User-Id", "root"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Server", "upstream/1.0"),
]


class Upstream(HardeningUpstream):
    """Answers /headers with RICH, /private and /cookie with a Cache-Control or a cookie, anything else plainly;
    every body counts the requests so far, so a cached answer shows."""

    def answer(self, head: bytes) -> bytes:
        path = head.split(b"\r\n")[0].split(b" ")[1]
        extra: list[tuple[str, str]] = []
        if path == b"/headers":
            extra = RICH
        elif path.startswith(b"/private"):
            extra = [("Cache-Control", path.partition(b"?")[2].decode() or "private, max-age=60")]
        elif path == b"/cookie":
            extra = [("Set-Cookie", "session=mine")]
        elif path == b"/vary":
            extra = [("Vary", "Accept-Encoding, Accept-Language")]
        elif path == b"/vary-encoding":
            extra = [("Vary", "Accept-Encoding")]
        body = b'{"n":%d}' % len(self.heads)
        lines = "".join(f"{k}: {v}\r\n" for k, v in extra).encode()
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b" % (
            lines,
            len(body),
            body,
        )


def gateway_spec(port: int, apps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    cache = {"ttlSeconds": 60}
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": "trust", "namespace": "default", "resourceVersion": "1", "generation": 1},
        "spec": {
            "apps": [
                {"appId": "OPEN", "workspaceId": "w"},
                {
                    "appId": "SIGNED",
                    "workspaceId": "w",
                    "credentialsSecretRef": {"name": "keys"},
                    "signature": {"algorithm": "HmacSha256"},
                    "keyOverlapSeconds": 300,
                },
            ]
            if apps is None
            else apps,
            "upstreams": [{"name": "main", "endpoints": [{"url": url}]}],
            "sessionValidation": {"upstream": "main", "path": "/session", "header": "X-Session"},
            "apis": [
                {"operationType": "open.op", "upstream": "main", "path": "/op"},
                {"operationType": "headers.op", "upstream": "main", "path": "/headers"},
                {"operationType": "cached.op", "upstream": "main", "path": "/op", "cache": cache},
                {"operationType": "private.op", "upstream": "main", "path": "/private", "cache": cache},
                {"operationType": "nostore.op", "upstream": "main", "path": "/private?no-store", "cache": cache},
                {"operationType": "cookie.op", "upstream": "main", "path": "/cookie", "cache": cache},
                {"operationType": "vary.op", "upstream": "main", "path": "/vary", "cache": cache},
                {"operationType": "encoding.op", "upstream": "main", "path": "/vary-encoding", "cache": cache},
            ],
        },
    }


def secret(**data: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys", "namespace": "default", "resourceVersion": str(time.monotonic_ns())},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


@pytest_asyncio.fixture
async def gw() -> AsyncIterator[tuple[Server, Upstream, LiveConfig[RouteTable]]]:
    up = Upstream()
    up_server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up.port = up_server.sockets[0].getsockname()[1]
    live: LiveConfig[RouteTable] = LiveConfig("trust", [KIND, SECRET], compiler("default", "trust"), EMPTY)
    live.on_snapshot(SECRET, {("default", "keys"): secret(hmacKey=KEY_A)})
    live.on_snapshot(KIND, {("default", "trust"): gateway_spec(up.port)})
    assert live.current is not EMPTY
    app: GatewayASGI = create_app(GatewaySettings(digest_log=False), live)
    server = Server(app, "127.0.0.1", 0, router=app.route, body_limit=app.body_limit)
    await server.start()
    yield server, up, live
    await server.stop(1.0)
    up_server.close()


async def call(port: int, path: str, *headers: str, body: bytes = b"{}") -> tuple[str, list[tuple[str, str]], bytes]:
    """(Result-Status, header lines as sent, body) of one request."""
    lines = "".join(f"{h}\r\n" for h in headers).encode("latin-1")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %b HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n%bconnection: close\r\n"
        b"content-length: %d\r\n\r\n%b" % (path.encode(), lines, len(body), body)
    )
    try:
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, content = raw.partition(b"\r\n\r\n")
    pairs = [
        (n.decode(), v.strip().decode("latin-1")) for n, _, v in (x.partition(b":") for x in head.split(b"\r\n")[1:])
    ]
    status = next((v for n, v in pairs if n.lower() == "result-status"), head.split(b" ")[1].decode())
    return status, pairs, content


OPEN = ("AppId: OPEN", "WorkspaceId: w")


def signed(op: str, key: bytes, body: bytes = b"{}", nonce: str = "") -> tuple[str, ...]:
    ts = str(int(time.time() * 1000))
    nonce = nonce or hashlib.sha256(str(time.perf_counter_ns()).encode()).hexdigest()[:16]
    msg = canonical("POST", "/mgw.htm", "", op, "SIGNED", "w", ts, nonce, body)
    sign = base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()
    return (f"Operation-Type: {op}", "AppId: SIGNED", "WorkspaceId: w", f"Ts: {ts}", f"Nonce: {nonce}", f"Sign: {sign}")


# --- 1003 without apps ---------------------------------------------------------------------------------------------


async def test_a_gateway_without_apps_refuses_every_call(gw: tuple[Server, Upstream, LiveConfig[RouteTable]]) -> None:
    server, up, live = gw
    no_apps = gateway_spec(up.port, apps=[])
    no_apps["metadata"]["resourceVersion"] = "2"
    live.on_snapshot(KIND, {("default", "trust"): no_apps})
    assert not live.current.apps
    for headers in (OPEN, ("AppId: ANY", "WorkspaceId: x"), ()):
        assert (await call(server.port, "/mgw.htm", "Operation-Type: open.op", *headers))[0] == "1003"
        status, _, _ = await call(server.port, "/api/open.op", *headers)
        assert status == "1003"
    assert up.heads == []  # nothing reached the upstream


# --- nonces ---------------------------------------------------------------------------------------------------------


async def test_a_long_nonce_is_kept_as_its_digest_and_still_refused_twice(
    gw: tuple[Server, Upstream, LiveConfig[RouteTable]],
) -> None:
    server, _, _ = gw
    long_nonce = "n" * 20_000  # a client chooses the length, up to the head limit
    headers = signed("open.op", KEY_A, nonce=long_nonce)
    assert (await call(server.port, "/mgw.htm", *headers))[0] == "1000"
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_A, nonce=long_nonce)))[0] == "7006"
    hot = server.app.gateway.hot  # the shared store (memory here) and the outage memory in front of it
    stored = [k for k in [*hot.shared._data, *hot._mirror] if k.startswith("nonce:")]
    assert stored and max(map(len, stored)) < 200, [len(k) for k in stored]


# --- revoking keys -------------------------------------------------------------------------------------------------


async def test_deleting_the_secret_revokes_its_key_at_once(gw: tuple[Server, Upstream, LiveConfig[RouteTable]]) -> None:
    server, _, live = gw
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_A)))[0] == "1000"
    live.on_snapshot(SECRET, {("default", "keys"): secret(hmacKey=KEY_B)})  # rotation: A stays for the overlap
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_A)))[0] == "1000"
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_B)))[0] == "1000"
    live.on_snapshot(SECRET, {})  # deleted: both keys refused now, overlap or not
    for key in (KEY_A, KEY_B):
        assert (await call(server.port, "/mgw.htm", *signed("open.op", key)))[0] == "7007"
    assert (
        live.current.apps[("SIGNED", "w")].signature.key_problem
        == "credentials Secret or key entry not found (key revoked)"
    )
    live.on_snapshot(SECRET, {("default", "keys"): secret(hmacKey=KEY_B)})  # back: B only, A stays revoked
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_B)))[0] == "1000"
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_A)))[0] == "7002"


async def test_removing_the_key_from_the_secret_revokes_it(gw: tuple[Server, Upstream, LiveConfig[RouteTable]]) -> None:
    server, _, live = gw
    live.on_snapshot(SECRET, {("default", "keys"): secret(other=b"x")})
    assert (await call(server.port, "/mgw.htm", *signed("open.op", KEY_A)))[0] == "7007"


def test_a_secret_not_listed_yet_keeps_the_last_good_key() -> None:
    """Pointing an app at another Secret whose watch waits for access is not a deletion (docs/gateway.md)."""
    ring = KeyRing(clock=lambda: 1000.0)
    key = ("sign", "HmacSha256", "default", "APP", "w")
    chain, problem = ring.chain(key, KEY_A, lambda m: m, 300)
    assert [k for k, _ in chain] == [KEY_A] and problem is None
    chain, problem = ring.chain(key, None, lambda m: m, 300, known=False)
    assert [k for k, _ in chain] == [KEY_A] and problem == "credentials Secret not readable yet"
    chain, problem = ring.chain(key, None, lambda m: m, 300)
    assert chain == () and problem and "revoked" in problem
    # Through the compiler: a Secret under unlisted(SECRET) is not known yet; one absent from a listing is gone.
    compile_ = compiler("default", "trust")
    live: LiveConfig[RouteTable] = LiveConfig("t", [KIND, SECRET], compile_, EMPTY)
    live.on_snapshot(SECRET, {("default", "keys"): secret(hmacKey=KEY_A)})
    live.on_snapshot(KIND, {("default", "trust"): gateway_spec(1)})
    assert live.current.apps[("SIGNED", "w")].signature.verifiers
    moved = gateway_spec(1)
    moved["metadata"]["resourceVersion"] = "2"
    moved["spec"]["apps"][1]["credentialsSecretRef"] = {"name": "next-keys"}
    live._absorb(KIND, {("default", "trust"): moved})  # the app now names a Secret whose watch has not listed
    pending = Resource(SECRET, "default", "next-keys", 0, "", None, {})
    waiting = compile_({**live.resources, unlisted(SECRET): {("default", "next-keys"): pending}})
    assert waiting.apps[("SIGNED", "w")].signature.verifiers  # the last good key, while the new Secret is not readable
    gone = compile_(live.resources)
    assert not gone.apps[("SIGNED", "w")].signature.verifiers  # listed and absent: revoked


# --- the response cache and credentials ---------------------------------------------------------------------------


async def test_the_cache_never_serves_one_callers_answer_to_another(
    gw: tuple[Server, Upstream, LiveConfig[RouteTable]],
) -> None:
    server, up, _ = gw
    op = ("Operation-Type: cached.op", *OPEN)

    async def n(*headers: str) -> bytes:
        status, _, body = await call(server.port, "/mgw.htm", *op, *headers)
        assert status == "1000"
        return body

    anonymous = await n()
    assert await n() == anonymous  # cached
    for who in (("Authorization: Bearer alice",), ("Cookie: sid=alice",), ("X-Session: alice",)):
        mine = await n(*who)
        assert mine != anonymous and await n(*who) == mine  # keyed by the credentials: cached per caller
    bob = await n("Authorization: Bearer bob")
    assert bob not in (anonymous, await n("Authorization: Bearer alice"))
    assert await n("Cookie: sid=alice", "Cookie: theme=dark") != await n("Cookie: sid=alice")
    before = len(up.heads)
    await n("Authorization: Bearer alice")
    assert len(up.heads) == before  # still from the cache


@pytest.mark.parametrize("op", ["private.op", "nostore.op", "cookie.op", "vary.op"])
async def test_private_answers_cookies_and_varying_answers_are_never_stored(
    gw: tuple[Server, Upstream, LiveConfig[RouteTable]], op: str
) -> None:
    server, up, _ = gw
    first = await call(server.port, "/mgw.htm", f"Operation-Type: {op}", *OPEN)
    second = await call(server.port, "/mgw.htm", f"Operation-Type: {op}", *OPEN)
    assert first[0] == second[0] == "1000" and first[2] != second[2] and len(up.heads) == 2
    assert not any(n.lower() == "etag" for n, _ in first[1])


async def test_varying_by_encoding_alone_is_stored(gw: tuple[Server, Upstream, LiveConfig[RouteTable]]) -> None:
    server, up, _ = gw
    first = await call(server.port, "/mgw.htm", "Operation-Type: encoding.op", *OPEN)
    second = await call(server.port, "/mgw.htm", "Operation-Type: encoding.op", *OPEN)
    assert first[0] == "1000" and first[2] == second[2] and len(up.heads) == 1
    assert ("Vary", "Accept-Encoding") in second[1]  # the cached answer keeps the upstream's headers


# --- answer headers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/headers.op", "/mgw.htm"])
async def test_the_upstreams_answer_headers_are_passed_on_as_documented(
    gw: tuple[Server, Upstream, LiveConfig[RouteTable]], path: str
) -> None:
    server, _, _ = gw
    status, pairs, body = await call(server.port, path, "Operation-Type: headers.op", *OPEN)
    assert status == "1000" and body == b'{"n":1}'
    got: dict[str, list[str]] = {}
    for name, value in pairs:
        got.setdefault(name.lower(), []).append(value)
    assert got["set-cookie"] == ["s=1; HttpOnly", "t=2"]
    for name, value in RICH[2:11]:
        assert got[name.lower()] == [value], name
    assert got["www-authenticate"] == ['Bearer realm="a", Basic realm="b"']  # repeated: joined
    assert got["x-request-id"] == ["r-1"] and got["x-rate-remaining"] == ["9"]
    for never in ("keep-alive", "proxy-authenticate", "upgrade", "trailer", "mgw-encrypted", "server"):
        assert never not in got, never
    assert "x-user-id" not in got and "x-forwarded-for" not in got
    assert got["memo"] == ["success"] and got["mgw-traceid"] != ["f" * 32] and len(got["mgw-traceid"]) == 1
    assert got["content-type"] == ["application/json"] and got["result-status"] == ["1000"]
