"""Link against real processes and a real Redis: tokens, one connection per device, notify-then-pull with
acks across reconnects, TTLs, delayed push, heartbeats, the limits that protect the server, and two link
processes routing to each other."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import Process, free_port, need_env, wait_ready
from mpaas.link import frames
from mpaas.link.client import Closed, LinkClient
from mpaas.link.frames import Close
from mpaas.link.tokens import TokenKey

KEY = b"k" * 32
APP, WS = "SHOP", "prod"


def config(folder: Path, key: bytes = KEY, *, min_seconds: int = 5, max_seconds: int = 60) -> Path:
    folder.mkdir(exist_ok=True)
    docs = [
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "PushChannel",
            "metadata": {"name": "link", "namespace": "shop"},
            "spec": {
                "appId": APP,
                "type": "Link",
                "link": {
                    "tokenSecretRef": {"name": "link-keys", "key": "tokenKey"},
                    "heartbeat": {"minSeconds": min_seconds, "maxSeconds": max_seconds},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "link-keys", "namespace": "shop"},
            "data": {"tokenKey": base64.b64encode(key).decode()},
        },
    ]
    (folder / "link.yaml").write_text(yaml.safe_dump_all(docs))
    return folder


class Link:
    def __init__(self, proc: Process, http: str, ws: str):
        self.proc, self.http, self.ws = proc, http, ws

    def client(self, device: str, **kw: Any) -> LinkClient:
        token = kw.pop("token", None) or TokenKey(KEY).issue(APP, WS, device)
        return LinkClient(self.ws, APP, WS, device, token, **kw)

    async def deliver(self, devices: list[str], payload: bytes, **kw: Any) -> dict[str, Any]:
        body = {"appId": APP, "workspaceId": WS, "deviceIds": devices, "payload": base64.b64encode(payload).decode()}
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(self.http + "/v1/link/deliver", json=body | kw)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.get(self.http + path)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def start_link(spawn: Callable[..., Process], tmp_path: Path, prefix: str) -> Iterator[Callable[..., Link]]:
    redis = need_env("MPAAS_TEST_REDIS_URL")

    def start(name: str = "link", folder: Path | None = None, **env: str) -> Link:
        http, ws = free_port(), free_port()
        proc = spawn(
            "link",
            env={
                "MPAAS_PORT": str(http),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_LINK_HOST": "127.0.0.1",
                "MPAAS_LINK_PORT": str(ws),
                "MPAAS_CONFIG_SOURCE": "dir",
                "MPAAS_CONFIG_DIR": str(folder or config(tmp_path / "config")),
                "MPAAS_REDIS_URL": redis,
                "MPAAS_REDIS_PREFIX": prefix,
                "POD_NAME": name,
                **env,
            },
            name=name,
        )
        wait_ready(f"http://127.0.0.1:{http}", proc)
        return Link(proc, f"http://127.0.0.1:{http}", f"ws://127.0.0.1:{ws}/v1/link")

    yield start


async def closed_with(client: LinkClient, seconds: float = 10) -> Closed:
    assert client.closed is not None
    return await asyncio.wait_for(asyncio.shield(client.closed), seconds)


async def take(client: LinkClient, n: int, seconds: float = 10) -> list[frames.Message]:
    return [await asyncio.wait_for(client.messages.get(), seconds) for _ in range(n)]


@pytest.mark.component
async def test_messages_arrive_once_in_order_across_reconnects(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    # Offline first: the messages wait in the inbox.
    out = await link.deliver([device], b"first")
    (first,) = out["results"]
    assert first["deviceId"] == device and first["online"] is False
    s1 = first["seq"]  # numbers start at the inbox's creation time: never reused after an idle removal
    assert s1 > 1_700_000_000_000_000
    await link.deliver([device], b"second")
    c = link.client(device)
    welcome = await c.connect()
    assert welcome.last_seq == s1 + 1 and 5 <= welcome.heartbeat_seconds <= 60
    assert [m.payload for m in await take(c, 2)] == [b"first", b"second"]
    # Online: delivered at once (urgent), small ones with their notice.
    assert (await link.deliver([device], b"third"))["results"][0]["online"] is True
    (third,) = await take(c, 1)
    assert (third.seq, third.payload) == (s1 + 2, b"third")
    await asyncio.sleep(0.3)  # its ack reaches the server
    await c.close()
    # Away: two more; back with the number it acked: those two, not the first three again.
    await link.deliver([device], b"fourth")
    await link.deliver([device], os.urandom(5000))  # too large to ride a notice: pulled
    again = link.client(device, last_acked=c.last_acked)
    await again.connect()
    got = await take(again, 2)
    assert [m.seq for m in got] == [s1 + 3, s1 + 4] and got[0].payload == b"fourth" and len(got[1].payload) == 5000
    await asyncio.sleep(0.5)
    assert again.messages.empty()
    await again.close()


@pytest.mark.component
async def test_a_client_that_did_not_ack_gets_the_messages_again(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    await link.deliver([device], b"one")
    c = link.client(device, auto_ack=False)
    await c.connect()
    assert [m.payload for m in await take(c, 1)] == [b"one"]
    await c.close()  # processed, never acked: it comes again
    again = link.client(device)
    await again.connect()
    (m,) = await take(again, 1)
    assert m.payload == b"one" and m.seq == c.frames[0].last_seq
    await again.close()


@pytest.mark.component
async def test_bad_tokens_and_unknown_apps_are_refused_with_their_codes(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    cases = [
        (TokenKey(b"x" * 32).issue(APP, WS, device), Close.UNAUTHORIZED),  # another key
        (TokenKey(KEY).issue(APP, WS, "someone-else"), Close.UNAUTHORIZED),  # another device's token
        (TokenKey(KEY).issue(APP, WS, device, ttl_seconds=-10), Close.UNAUTHORIZED),  # expired
        (b"v1.\xd9\xa1\xd9\xa2.xyz", Close.UNAUTHORIZED),  # not digits
    ]
    for token, code in cases:
        c = link.client(device, token=token)
        with pytest.raises(Closed) as e:
            await c.connect()
        assert e.value.code == code, token
    c = LinkClient(link.ws, "NOAPP", WS, device, TokenKey(KEY).issue("NOAPP", WS, device))
    with pytest.raises(Closed) as e:
        await c.connect()
    assert e.value.code == Close.UNKNOWN_APP


@pytest.mark.component
async def test_a_newer_connection_replaces_the_older_which_is_told_why(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    first = link.client(device)
    await first.connect()
    second = link.client(device)
    await second.connect()
    assert (await closed_with(first)).code == Close.REPLACED
    await link.deliver([device], b"to the newer")
    assert [m.payload for m in await take(second, 1)] == [b"to the newer"]
    await second.close()


@pytest.mark.component
async def test_two_link_processes_route_to_each_other(start_link: Callable[..., Link]) -> None:
    a, b = start_link("pod-a"), start_link("pod-b")
    device = "d-" + uuid.uuid4().hex[:6]
    c = a.client(device)
    await c.connect()
    presence = (await b.get(f"/v1/link/presence/{APP}/{WS}/{device}")).json()
    assert presence["online"] is True and presence["pod"] == "pod-a" and presence["lastSeen"] > 0
    assert (await b.deliver([device], b"via b"))["results"][0]["online"] is True  # told to pod-a over Redis
    assert [m.payload for m in await take(c, 1)] == [b"via b"]
    # The device moves to pod-b: pod-a closes its connection, and deliveries follow.
    moved = b.client(device, last_acked=c.last_acked)
    await moved.connect()
    assert (await closed_with(c)).code == Close.REPLACED
    await a.deliver([device], b"via a")
    assert [m.payload for m in await take(moved, 1)] == [b"via a"]
    await moved.close()
    await asyncio.sleep(0.5)
    assert (await a.get(f"/v1/link/presence/{APP}/{WS}/{device}")).json()["online"] is False


@pytest.mark.component
async def test_a_killed_link_process_loses_nothing(start_link: Callable[..., Link]) -> None:
    a, b = start_link("pod-a"), start_link("pod-b")
    device = "d-" + uuid.uuid4().hex[:6]
    c = a.client(device)
    await c.connect()
    await asyncio.sleep(2.5)  # both pods in the registry
    got: list[frames.Message] = []
    for i in range(20):
        await b.deliver([device], f"m{i}".encode())
    got += await take(c, 20)
    os.kill(a.proc.proc.pid, signal.SIGKILL)  # mid-stream: more follow while the device is cut off
    await closed_with(c)
    for i in range(20, 40):
        await b.deliver([device], f"m{i}".encode())
    # Back through /dispatch, as a phone comes back: the dead pod may still be listed for a few seconds, so
    # the client tries the addresses in order.
    async with httpx.AsyncClient(timeout=5) as http:
        listed = (await http.get(b.ws.replace("ws://", "http://").replace("/v1/link", "/dispatch"))).json()
    again = None
    for address in [x["url"] for x in listed["addresses"]]:
        candidate = LinkClient(address, APP, WS, device, c.token, last_acked=c.last_acked)
        try:
            await candidate.connect()
        except OSError:
            continue
        again = candidate
        break
    assert again is not None and again.url == b.ws, listed
    got += await take(again, 40 - len(got))
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(40)]  # once each, in order
    assert [m.seq for m in got] == list(range(got[0].seq, got[0].seq + 40))
    await asyncio.sleep(0.5)
    assert again.messages.empty()
    await again.close()


@pytest.mark.component
async def test_non_urgent_messages_ride_the_next_heartbeat(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    c = link.client(device, ping=False)
    await c.connect()
    await link.deliver([device], b"later", urgent=False)
    await asyncio.sleep(1.0)
    assert c.messages.empty()  # held for the heartbeat
    c.send(frames.Ping(frames.Network.WIFI))
    (m,) = await take(c, 1, seconds=5)
    assert m.payload == b"later" and not m.flags & frames.URGENT
    await c.close()


@pytest.mark.component
async def test_expired_messages_are_not_delivered(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    await link.deliver([device], b"short-lived", ttlSeconds=1)
    await link.deliver([device], b"kept", ttlSeconds=600)
    await asyncio.sleep(1.5)
    c = link.client(device)
    await c.connect()
    (m,) = await take(c, 1)
    assert m.payload == b"kept"
    await asyncio.sleep(0.3)
    assert c.messages.empty()
    await c.close()


@pytest.mark.component
async def test_misbehaving_clients_are_closed_with_their_codes(start_link: Callable[..., Link]) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]

    async def raw() -> LinkClient:
        c = link.client(device)
        await c.connect()
        return c

    c = await raw()
    c.send_raw(b"\x7f")  # a frame type this version lacks
    assert (await closed_with(c)).code == Close.UNKNOWN_FRAME
    c = await raw()
    c.send_raw(bytes([frames.FrameType.ACK]) + b"\xff")  # a varint cut short
    assert (await closed_with(c)).code == Close.PROTOCOL_ERROR
    c = await raw()
    c.send(frames.Ack(99))  # never sent
    assert (await closed_with(c)).code == Close.BAD_ACK
    c = await raw()
    for _ in range(100):  # a flood
        c.send(frames.Ping())
    assert (await closed_with(c)).code == Close.RATE_LIMITED
    c = await raw()
    c.send_raw(bytes(frames.MAX_FRAME + 1))  # picows closes it with 1009 (message too big)
    assert (await closed_with(c)).code == 1009
    # Before HELLO: anything else is refused.
    from picows import WSListener, WSMsgType, ws_connect

    codes: list[int] = []

    class Listener(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type.name == "CLOSE":
                codes.append(int(frame.get_close_code()))

    transport, _ = await ws_connect(Listener, link.ws)
    transport.send(WSMsgType.BINARY, frames.Pull(0).encode())
    await asyncio.wait_for(transport.wait_disconnected(), 5)
    assert codes == [Close.NOT_AUTHENTICATED]
    metrics = (await link.get("/metrics")).text
    for code in (Close.UNKNOWN_FRAME, Close.PROTOCOL_ERROR, Close.BAD_ACK, Close.RATE_LIMITED):
        assert f'mpaas_link_closes_total{{code="{int(code)}"}}' in metrics


@pytest.mark.component
async def test_a_connection_that_stops_pinging_is_closed_and_its_interval_backs_off(
    start_link: Callable[..., Link], tmp_path: Path
) -> None:
    link = start_link(folder=config(tmp_path / "short", min_seconds=5, max_seconds=10))
    device = "d-" + uuid.uuid4().hex[:6]
    c = link.client(device, ping=False)
    welcome = await c.connect()
    assert welcome.heartbeat_seconds == 5
    # Pings on time lengthen the interval.
    for _ in range(3):
        c.send(frames.Ping(frames.Network.WIFI))
        await asyncio.sleep(0.2)
    pongs = [f.heartbeat_seconds for f in c.frames if isinstance(f, frames.Pong)]
    assert pongs == [5, 5, 10]  # grown, up to the channel's maxSeconds
    # Silence: closed after the interval and its grace, and the next connection starts below it.
    assert (await closed_with(c, 40)).code == Close.HEARTBEAT_TIMEOUT
    again = link.client(device, ping=False)
    assert (await again.connect()).heartbeat_seconds == 5
    for _ in range(3):  # and grows no further than below the interval that failed
        again.send(frames.Ping(frames.Network.WIFI))
        await asyncio.sleep(0.2)
    assert [f.heartbeat_seconds for f in again.frames if isinstance(f, frames.Pong)] == [5, 5, 5]
    await again.close()


@pytest.mark.component
async def test_a_client_that_does_not_read_is_dropped_and_the_server_stays_small(
    start_link: Callable[..., Link],
) -> None:
    import socket

    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    for i in range(40):
        await link.deliver([device], bytes([i]) * 60_000)
    host, port = link.ws.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a phone that stopped reading
    sock.connect((host, int(port)))

    def send(payload: bytes) -> None:  # a masked binary WebSocket frame, as clients send
        mask = os.urandom(4)
        head = bytes([0x82]) + (
            bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0xFE]) + len(payload).to_bytes(2, "big")
        )
        sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /v1/link HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    send(frames.Hello(APP, WS, device, TokenKey(KEY).issue(APP, WS, device)).encode())
    await asyncio.sleep(0.5)
    for _ in range(40):  # each answered with 256 KiB the client never reads
        send(frames.Pull(0, 256).encode())

    async def dropped() -> bool:
        return 'mpaas_link_closes_total{code="4007"}' in (await link.get("/metrics")).text

    for _ in range(100):
        if await dropped():
            break
        await asyncio.sleep(0.1)
    assert await dropped()
    status = Path(f"/proc/{link.proc.proc.pid}/status").read_text()  # procfs: never blocks
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    assert rss_kib < 200_000  # the 10 MiB asked for were never buffered whole
    sock.close()


async def probe_seconds(ws_url: str) -> float:
    """Time from connecting to /v1/link/probe to its answer."""
    import time

    from picows import WSListener, WSMsgType, ws_connect

    answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    started = time.monotonic()

    class Listener(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.BINARY and not answered.done():
                answered.set_result(time.monotonic() - started)

    transport, _ = await ws_connect(Listener, ws_url.replace("/v1/link", "/v1/link/probe"))
    try:
        return await asyncio.wait_for(answered, 5)
    finally:
        transport.disconnect()


@pytest.mark.component
async def test_dispatch_lists_pods_lightest_first_and_a_loaded_pod_answers_probes_late(
    start_link: Callable[..., Link],
) -> None:
    a = start_link("pod-a", MPAAS_LINK_MAX_CONNECTIONS="4")
    b = start_link("pod-b")
    clients = [a.client(f"d-{i}-{uuid.uuid4().hex[:4]}") for i in range(4)]
    for c in clients:
        await c.connect()
    full = a.client("one-too-many")
    with pytest.raises(Closed) as e:
        await full.connect()
    assert e.value.code == Close.SERVER_FULL
    await asyncio.sleep(3)  # each pod publishes its load every 2 s

    async def dispatch(link: Link) -> list[str]:
        async with httpx.AsyncClient() as http:
            r = await http.get(link.ws.replace("ws://", "http://").replace("/v1/link", "/dispatch"))
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        return [x["url"] for x in r.json()["addresses"]]

    assert await dispatch(a) == await dispatch(b) == [b.ws]  # pod-a is full: not offered
    await clients[0].close()
    await asyncio.sleep(3)
    assert await dispatch(a) == [b.ws, a.ws]  # lightest first
    loaded, light = await probe_seconds(a.ws), await probe_seconds(b.ws)
    assert 0.3 < loaded < 1.0 and light < 0.2  # 3 of 4 connections: 3/4 of half a second late
    for c in clients[1:]:
        await c.close()


@pytest.mark.component
async def test_a_draining_pod_sends_its_clients_elsewhere_and_loses_nothing(
    start_link: Callable[..., Link],
) -> None:
    import time

    a = start_link("pod-a", MPAAS_DRAIN_SECONDS="2")
    b = start_link("pod-b")
    devices = [f"d-{i}-{uuid.uuid4().hex[:4]}" for i in range(10)]
    clients = {d: a.client(d) for d in devices}
    for c in clients.values():
        await c.connect()
    await asyncio.sleep(3)  # both pods know each other
    got: dict[str, list[bytes]] = {d: [] for d in devices}
    sent = 0

    async def send_some(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            await b.deliver(devices, f"m{sent}".encode())
            sent += 1

    await send_some(5)
    stopped = time.monotonic()
    a.proc.proc.send_signal(signal.SIGTERM)  # a rolling restart
    await send_some(10)  # while it drains
    moved = {}
    for d, c in clients.items():
        code = (await closed_with(c)).code
        assert code == Close.GOING_AWAY and c.goaway is not None and c.goaway.addresses == [b.ws], (code, c.goaway)
        while not c.messages.empty():
            got[d].append(c.messages.get_nowait().payload)
        moved[d] = LinkClient(c.goaway.addresses[0], APP, WS, d, c.token, last_acked=c.last_acked)
        await moved[d].connect()
    await send_some(5)
    for d, c in moved.items():
        while len(got[d]) < sent:
            got[d].append((await asyncio.wait_for(c.messages.get(), 10)).payload)
        assert got[d] == [f"m{i}".encode() for i in range(sent)], d  # every message once, in order
        await c.close()
    assert a.proc.proc.wait(15) == 0 and time.monotonic() - stopped < 12  # within its grace period


NODE_DRIVER = """
import WebSocket from "WS_PATH";
import { LinkClient } from "./link-client.js";
const [url, app, workspace, device, token, want] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
let count = 0;
const link = new LinkClient({
  url, appId: app, workspaceId: workspace, deviceId: device, token, WebSocket,
  network: 1,
  onWelcome: (w) => say({ event: "welcome", lastSeq: w.lastSeq, heartbeatSeconds: w.heartbeatSeconds }),
  onClose: (code) => say({ event: "close", code }),
  onMessage: async (m) => {
    say({ event: "message", stream: m.stream, seq: m.seq, payload: new TextDecoder().decode(m.payload) });
    if (m.stream === 0 && ++count === Number(want)) {
      setTimeout(() => { say({ event: "done", lastAcked: link.lastAcked }); link.close(); }, 300);
    }
  },
});
await link.connect();
"""


@pytest.mark.component
async def test_the_typescript_client_gets_every_message_once_across_a_drain(
    start_link: Callable[..., Link], tmp_path: Path
) -> None:
    import json
    import subprocess

    from testenv_paths import node_ws, tsc

    sdk = Path(__file__).resolve().parents[1] / "mpaas" / "link" / "sdk" / "link-client.ts"
    built = await asyncio.to_thread(
        subprocess.run,
        [tsc(), "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler",
         "--lib", "es2022,dom", "--outDir", str(tmp_path), str(sdk)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "driver.js").write_text(NODE_DRIVER.replace("WS_PATH", f"{node_ws()}/ws/wrapper.mjs"))
    a = start_link("pod-a", MPAAS_DRAIN_SECONDS="1")
    b = start_link("pod-b")
    device = "ts-" + uuid.uuid4().hex[:6]
    await a.deliver([device], b"m0")
    await a.deliver([device], b"m1")
    await asyncio.sleep(2.5)  # both pods registered: a's GOAWAY will name b
    token = TokenKey(KEY).issue(APP, WS, device).decode()
    node = await asyncio.create_subprocess_exec(
        "node", str(tmp_path / "driver.js"), a.ws, APP, WS, device, token, "6",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    events: list[dict[str, Any]] = []

    async def until(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert node.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(node.stdout.readline(), 20)
            except TimeoutError:
                raise AssertionError(f"no such event from the client; it said: {events}") from None
            assert line, (events, (await node.stderr.read()).decode() if node.stderr else "")
            event = json.loads(line)
            events.append(event)
            if check(event):
                return event

    try:
        welcome = await until(lambda e: e["event"] == "welcome")
        base = welcome["lastSeq"] - 1  # m0's number
        await until(lambda e: e.get("seq") == base + 1)
        await b.deliver([device], b"m2")  # online, through the other pod
        await until(lambda e: e.get("seq") == base + 2)
        a.proc.proc.send_signal(signal.SIGTERM)  # drain: GOAWAY names pod-b, the client moves there
        await until(lambda e: e["event"] == "close" and e["code"] == 1001)
        await b.deliver([device], b"m3")
        await b.deliver([device], b"m4", urgent=False)
        await until(lambda e: e["event"] == "welcome")  # on pod-b, resuming from its last ack
        async with httpx.AsyncClient(timeout=10) as http:
            body = {"appId": APP, "workspaceId": WS, "payload": base64.b64encode(b"to all").decode()}
            assert (await http.post(b.http + "/v1/link/broadcast", json=body)).status_code == 200
        await until(lambda e: e.get("stream") == 1)
        await b.deliver([device], b"m5")
        done = await until(lambda e: e["event"] == "done")
    finally:
        if node.returncode is None:
            node.kill()
        await node.wait()
    got = [(e["seq"], e["payload"]) for e in events if e["event"] == "message" and e["stream"] == 0]
    assert got == [(base + i, f"m{i}") for i in range(6)]  # once each, in order, across the move
    assert [e["payload"] for e in events if e.get("stream") == 1] == ["to all"]
    assert done["lastAcked"] == base + 5
    presence = (await b.get(f"/v1/link/presence/{APP}/{WS}/{device}")).json()
    assert presence["pod"] in (None, "pod-b")


@pytest.mark.component
async def test_a_broadcast_reaches_every_device_of_the_app_on_every_pod_once(start_link: Callable[..., Link]) -> None:
    a, b = start_link("pod-a"), start_link("pod-b")
    tag = uuid.uuid4().hex[:4]
    on_a = [a.client(f"a{i}-{tag}") for i in range(3)]
    on_b = [b.client(f"b{i}-{tag}") for i in range(2)]
    for c in (*on_a, *on_b):
        await c.connect()

    async def broadcast(link: Link, payload: bytes, **kw: Any) -> int:
        body = {"appId": APP, "workspaceId": WS, "payload": base64.b64encode(payload).decode(), **kw}
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(link.http + "/v1/link/broadcast", json=body)
        assert r.status_code == 200, r.text
        return int(r.json()["seq"])

    first = await broadcast(b, b"to everyone")
    for c in (*on_a, *on_b):
        m = await asyncio.wait_for(c.broadcasts.get(), 10)
        assert (m.seq, m.payload) == (first, b"to everyone")
        assert c.messages.empty()  # not in the device's own inbox
    await asyncio.sleep(0.3)
    away = on_a[0]
    await away.close()
    second = await broadcast(a, b"while you were away")
    assert (await asyncio.wait_for(on_b[0].broadcasts.get(), 10)).seq == second
    # Back, with the broadcast number it read: it gets what it missed, once.
    back = a.client(away.device_id, broadcast_acked=away.broadcast_acked, last_acked=away.last_acked)
    await back.connect()
    m = await asyncio.wait_for(back.broadcasts.get(), 10)
    assert (m.seq, m.payload) == (second, b"while you were away")
    # A device new to broadcasts starts at the newest: the app's past broadcasts are not its.
    fresh = b.client(f"new-{tag}")
    welcome = await fresh.connect()
    assert welcome.broadcast_last_seq == second
    third = await broadcast(b, b"from now on")
    assert (await asyncio.wait_for(fresh.broadcasts.get(), 10)).seq == third
    await asyncio.sleep(0.3)
    assert fresh.broadcasts.empty() and back.broadcasts.qsize() == 1  # `third` only
    for c in (back, fresh, *on_a[1:], *on_b):
        await c.close()


@pytest.mark.component
async def test_an_inbox_of_expired_messages_is_moved_past_and_ids_cannot_forge_notices(
    start_link: Callable[..., Link],
) -> None:
    link = start_link()
    device = "d-" + uuid.uuid4().hex[:6]
    for _ in range(3):
        await link.deliver([device], b"gone", ttlSeconds=1)
    await asyncio.sleep(1.5)
    c = link.client(device)
    welcome = await c.connect()
    assert welcome.last_seq > 0  # numbered, all expired unread
    await asyncio.sleep(1.0)
    assert c.closed is not None and not c.closed.done()  # no pull loop: moved past them
    assert c.last_acked == welcome.last_seq
    await link.deliver([device], b"fresh")
    assert [m.payload for m in await take(c, 1)] == [b"fresh"]
    await c.close()
    # Ids that could break the pods' notices (a line each, tab-separated) or the stores' keys are refused.
    async with httpx.AsyncClient(timeout=10) as http:
        for devices in (["x\nN\tSHOP/prod/victim\t5\t1\t0\t0\tRk9SR0VE"], ["a\tb"], ["{tag}"], ["with space"]):
            body = {"appId": APP, "workspaceId": WS, "deviceIds": devices, "payload": ""}
            r = await http.post(link.http + "/v1/link/deliver", json=body)
            assert r.status_code == 400 and "deviceIds" in r.json()["error"], devices
        body = {"appId": "SHOP\nB", "workspaceId": WS, "payload": ""}
        assert (await http.post(link.http + "/v1/link/broadcast", json=body)).status_code == 400
    bad = link.client("bad\tid", token=TokenKey(KEY).issue(APP, WS, "bad\tid"))
    with pytest.raises(Closed) as e:
        await bad.connect()
    assert e.value.code == Close.UNAUTHORIZED
