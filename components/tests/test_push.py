"""Push against real processes and servers: a push process and a link process on a real Redis and Kafka, and a
local APNs (HTTP/2 over TLS, hack/push_vendors/apns.py). Signed calls, devices and users, routing between
link and APNs, idempotency, the documented refusals, dead tokens pruned, templates, schedules across a
restart, TTL re-delivery on reconnect and on bind, gorush's API, and a push process killed mid-broadcast."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from conftest import Process, free_port, need_env, wait_ready
from mpaas.link.client import LinkClient
from mpaas.link.tokens import TokenKey
from mpaas.push.auth import sign_headers
from push_vendors.apns import ApnsServer

pytestmark = pytest.mark.component

APP, WS = "SHOP", "prod"
SERVER_KEY = b"s" * 32
LINK_KEY = b"k" * 32


def write_config(folder: Path, apns: ApnsServer) -> Path:
    folder.mkdir(exist_ok=True)
    ns = {"namespace": "shop"}

    def secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
        encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, **ns}, "data": encoded}

    docs = [
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "MpaasGateway",
            "metadata": {"name": "gw", **ns},
            "spec": {"apps": [{"appId": APP, "workspaceId": WS, "credentialsSecretRef": {"name": "shop-keys"}}]},
        },
        secret("shop-keys", {"serverApiKey": SERVER_KEY}),
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "PushChannel",
            "metadata": {"name": "link", **ns},
            "spec": {
                "appId": APP,
                "type": "Link",
                "link": {"tokenSecretRef": {"name": "link-keys", "key": "tokenKey"}},
            },
        },
        secret("link-keys", {"tokenKey": LINK_KEY}),
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "PushChannel",
            "metadata": {"name": "apns", **ns},
            "spec": {
                "appId": APP,
                "type": "APNs",
                "endpoint": apns.url,
                "credentialsSecretRef": {"name": "apns-creds"},
                "apns": {"teamId": apns.team_id, "keyId": apns.key_id, "topic": "com.example.app"},
            },
        },
        secret("apns-creds", {"authKey": apns.auth_key, "caBundle": Path(apns.ca_file).read_bytes()}),
    ]
    (folder / "push.yaml").write_text(yaml.safe_dump_all(docs))
    return folder


class Push:
    def __init__(self, proc: Process, url: str):
        self.proc, self.url = proc, url
        self.http = httpx.AsyncClient(timeout=30)  # one client: making one costs more than a call

    async def call(
        self, method: str, path: str, body: Any = None, *, key: bytes = SERVER_KEY, **kw: Any
    ) -> httpx.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        path_only, _, query = path.partition("?")
        headers = sign_headers(key, method, path_only, query, APP, WS, raw) | kw.pop("headers", {})
        return await self.http.request(method, self.url + path, content=raw, headers=headers, **kw)

    async def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = await self.call(method, path, body)
        assert r.status_code in (200, 202), r.text
        return r.json()  # type: ignore[no-any-return]

    async def register(self, device: str, platform: str = "android", **kw: Any) -> None:
        await self.ok("PUT", f"/v1/push/devices/{device}", {"platform": platform, **kw})

    async def settled(self, message_id: str, *, seconds: float = 30, done: int | None = None) -> dict[str, Any]:
        """The message's status once its fan-out is done (and `done` outcomes counted)."""
        deadline = time.monotonic() + seconds
        while True:
            st = await self.ok("GET", f"/v1/push/messages/{message_id}")
            counted = sum(n for k, n in st["counts"].items() if not k.startswith("Receipt."))
            if st["state"] == "Done" and (done is None or counted >= done):
                return st
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.1)

    async def counted(self, message_id: str, key: str, n: int, *, seconds: float = 15) -> None:
        """Until the message's `key` count is `n`."""
        deadline = time.monotonic() + seconds
        while (st := await self.ok("GET", f"/v1/push/messages/{message_id}"))["counts"].get(key, 0) != n:
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.1)


@pytest.fixture
def names() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        "MPAAS_REDIS_PREFIX": f"p{run}:",
        "MPAAS_LINK_REDIS_PREFIX": f"l{run}:",
        "MPAAS_SENDS_TOPIC": f"push-sends-{run}",
        "MPAAS_VENDOR_TOPIC": f"push-vendor-{run}",
        "MPAAS_FANOUT_GROUP": f"fanout-{run}",
        "MPAAS_SENDER_GROUP": f"senders-{run}",
    }


@pytest_asyncio.fixture
async def apns() -> AsyncIterator[ApnsServer]:
    server = ApnsServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def folder(tmp_path: Path, apns: ApnsServer) -> Path:
    return write_config(tmp_path / "config", apns)


@pytest.fixture
def start_push(
    apns: ApnsServer, spawn: Callable[..., Process], folder: Path, names: dict[str, str]
) -> Iterator[Callable[..., Push]]:
    # apns first: it stops after the processes holding connections to it
    redis, kafka = need_env("MPAAS_TEST_REDIS_URL"), need_env("MPAAS_TEST_KAFKA")

    def start(name: str = "push", port: int | None = None, **env: str) -> Push:
        port = port or free_port()
        proc = spawn(
            "push",
            env={
                "MPAAS_PORT": str(port),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_CONFIG_SOURCE": "dir",
                "MPAAS_CONFIG_DIR": str(folder),
                "MPAAS_REDIS_URL": redis,
                "MPAAS_KAFKA_URL": f"kafka://{kafka}",
                **names,
                **env,
            },
            name=name,
        )
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return Push(proc, f"http://127.0.0.1:{port}")

    yield start


@pytest.fixture
def start_link(
    apns: ApnsServer, spawn: Callable[..., Process], folder: Path, names: dict[str, str]
) -> Callable[[], str]:
    def start() -> str:
        http, ws = free_port(), free_port()
        proc = spawn(
            "link",
            env={
                "MPAAS_PORT": str(http),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_LINK_HOST": "127.0.0.1",
                "MPAAS_LINK_PORT": str(ws),
                "MPAAS_CONFIG_SOURCE": "dir",
                "MPAAS_CONFIG_DIR": str(folder),
                "MPAAS_REDIS_URL": need_env("MPAAS_TEST_REDIS_URL"),
                "MPAAS_REDIS_PREFIX": names["MPAAS_LINK_REDIS_PREFIX"],
                "POD_NAME": "link-0",
            },
            name="link",
        )
        wait_ready(f"http://127.0.0.1:{http}", proc)
        return f"ws://127.0.0.1:{ws}/v1/link"

    return start


def device_client(ws: str, device: str) -> LinkClient:
    return LinkClient(ws, APP, WS, device, TokenKey(LINK_KEY).issue(APP, WS, device))


async def notifications(client: LinkClient, n: int, seconds: float = 15) -> list[dict[str, Any]]:
    return [json.loads((await asyncio.wait_for(client.messages.get(), seconds)).payload) for _ in range(n)]


async def until(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def arrived(apns: ApnsServer) -> Counter[str]:
    return Counter(a.token for a in apns.accepted)


async def test_one_call_reaches_a_user_over_link_when_online_and_apns_when_not(
    start_push: Callable[..., Push], start_link: Callable[[], str], apns: ApnsServer
) -> None:
    ws = start_link()
    push = start_push()
    phone, tablet = "android-" + uuid.uuid4().hex[:6], "ios-" + uuid.uuid4().hex[:6]
    ios_token = os.urandom(32).hex()
    await push.register(phone, "android", brand="samsung", appVersion="2.1.0")
    await push.register(tablet, "ios", brand="apple", tokens={"APNs": ios_token})
    for d in (phone, tablet):
        await push.ok("POST", "/v1/push/bind", {"userId": "alice", "deviceId": d})
    client = device_client(ws, phone)
    await client.connect()
    try:
        sent = await push.ok(
            "POST",
            "/v1/push/messages",
            {
                "target": {"type": "user", "ids": ["alice"]},
                "notification": {"title": "Hi", "body": "Sale", "data": {"k": "v"}},
            },
        )
        (got,) = await notifications(client, 1)
        assert got == {"messageId": sent["messageId"], "title": "Hi", "body": "Sale", "data": {"k": "v"}}
        st = await push.settled(sent["messageId"], done=2)
        assert st["counts"] == {"Link.Sent": 1, "APNs.Sent": 1} and st["targets"] == 2
        (a,) = apns.accepted
        assert a.token == ios_token and a.payload["aps"]["alert"] == {"title": "Hi", "body": "Sale"}
        assert a.payload["k"] == "v" and a.headers["apns-collapse-id"] == sent["messageId"]
        # The phone reports it opened it; once per device however often it reports.
        token = TokenKey(LINK_KEY).issue(APP, WS, phone).decode()
        receipt = {"messageId": sent["messageId"], "deviceId": phone, "event": "opened"}
        async with httpx.AsyncClient() as http:
            for _ in range(2):
                r = await http.post(
                    push.url + "/v1/push/receipts",
                    json=receipt,
                    headers={"Authorization": f"Bearer {token}", "AppId": APP, "WorkspaceId": WS},
                )
                assert r.status_code == 200, r.text
            forged = await http.post(
                push.url + "/v1/push/receipts",
                json=receipt | {"deviceId": tablet},
                headers={"Authorization": f"Bearer {token}", "AppId": APP, "WorkspaceId": WS},
            )
            assert forged.status_code == 401  # the phone's token does not speak for the tablet
        st = await push.ok("GET", f"/v1/push/messages/{sent['messageId']}")
        assert st["counts"]["Receipt.Opened"] == 1
        # The phone's link client acked the message: link reported it delivered, and the app reporting it too
        # does not count it twice.
        await push.counted(sent["messageId"], "Receipt.Delivered", 1)
        await push.ok("POST", "/v1/push/receipts", receipt | {"event": "delivered"})
        st = await push.ok("GET", f"/v1/push/messages/{sent['messageId']}")
        assert st["counts"]["Receipt.Delivered"] == 1
        stats = await push.ok("GET", "/v1/push/stats")
        assert stats["totals"]["APNs.Sent"] >= 1 and stats["minutes"]
    finally:
        await client.close()


async def test_a_message_acked_only_in_the_next_hello_counts_as_delivered(
    start_push: Callable[..., Push], start_link: Callable[[], str]
) -> None:
    ws = start_link()
    push = start_push()
    phone = "hp-" + uuid.uuid4().hex[:6]
    await push.register(phone, "android", brand="samsung")
    token = TokenKey(LINK_KEY).issue(APP, WS, phone)
    dropped = LinkClient(ws, APP, WS, phone, token, auto_ack=False)  # its connection drops before it acks
    await dropped.connect()
    try:
        body = {"target": {"type": "device", "ids": [phone]}, "notification": {"body": "b"}}
        sent = await push.ok("POST", "/v1/push/messages", body)
        got = await asyncio.wait_for(dropped.messages.get(), 15)
    finally:
        await dropped.close()
    await asyncio.sleep(1.0)
    assert "Receipt.Delivered" not in (await push.ok("GET", f"/v1/push/messages/{sent['messageId']}"))["counts"]
    again = LinkClient(ws, APP, WS, phone, token, last_acked=got.seq, auto_ack=False)  # acks it in its HELLO
    await again.connect()
    try:
        await push.counted(sent["messageId"], "Receipt.Delivered", 1)
    finally:
        await again.close()


async def test_a_sent_message_is_recalled_over_link_and_replaced_at_the_vendor(
    start_push: Callable[..., Push], start_link: Callable[[], str], apns: ApnsServer
) -> None:
    ws = start_link()
    push = start_push()
    phone, tablet, watch = ("r" + k + "-" + uuid.uuid4().hex[:6] for k in "ptw")
    tablet_token, watch_token = os.urandom(32).hex(), os.urandom(32).hex()
    await push.register(phone, "android", brand="samsung")
    await push.register(tablet, "ios", brand="apple", tokens={"APNs": tablet_token})
    await push.register(watch, "ios", brand="apple", tokens={"APNs": watch_token})
    for d in (phone, tablet, watch):
        await push.ok("POST", "/v1/push/bind", {"userId": "carol", "deviceId": d})
    client, on_watch = device_client(ws, phone), device_client(ws, watch)
    await client.connect()
    await on_watch.connect()  # the watch gets the message over link, then goes offline
    try:
        target = {"type": "user", "ids": ["carol"]}
        sent = await push.ok("POST", "/v1/push/messages", {"target": target, "notification": {"body": "oops"}})
        await push.settled(sent["messageId"], done=3)
        (first,) = await notifications(client, 1)
        await notifications(on_watch, 1)
        await on_watch.close()
        [shown] = [a for a in apns.accepted if a.token == tablet_token]
        assert shown.headers["apns-collapse-id"] == sent["messageId"]
        r = await push.call("DELETE", f"/v1/push/messages/{sent['messageId']}?recalledText=Withdrawn%20%E2%9C%93")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "Revoked"
        notice_id = r.json()["recallMessageId"]
        (notice,) = await notifications(client, 1)  # the app takes the first one down
        assert notice == {"messageId": notice_id, "data": {"mpaasRecall": first["messageId"]}}
        # The tablet, which APNs showed it on, gets a notification that replaces it; the watch, which had it over
        # link, gets nothing from APNs.
        await until(lambda: arrived(apns)[tablet_token] == 2, 15)
        replaced = [a for a in apns.accepted if a.token == tablet_token][1:]
        assert [(a.headers["apns-collapse-id"], a.payload["aps"]["alert"]) for a in replaced] == [
            (sent["messageId"], {"title": "Recalled", "body": "Withdrawn \u2713"})
        ]
        assert not [a for a in apns.accepted if a.token == watch_token]
        st = await push.ok("GET", f"/v1/push/messages/{sent['messageId']}")
        assert st["state"] == "Revoked"
        again = await push.call("DELETE", f"/v1/push/messages/{sent['messageId']}")
        assert (again.status_code, again.json()["code"]) == (409, "NotCancelable")
        undo = await push.call("DELETE", f"/v1/push/messages/{notice_id}")
        assert (undo.status_code, undo.json()["code"]) == (409, "NotCancelable")
        for bad in ("recalledText=", "recalledTitle=" + "x" * 257, "recalledText=a&recalledText=b"):
            r = await push.call("DELETE", f"/v1/push/messages/{sent['messageId']}?{bad}")
            assert (r.status_code, r.json()["code"]) == (400, "InvalidRequest"), bad
    finally:
        await client.close()
        await on_watch.close()


async def test_a_send_waiting_out_a_rate_limit_is_not_made_once_recalled(
    start_push: Callable[..., Push], apns: ApnsServer
) -> None:
    push = start_push()
    d, token = "rl-" + uuid.uuid4().hex[:6], os.urandom(32).hex()
    await push.register(d, "ios", brand="apple", tokens={"APNs": token})
    apns.rate_limit(1, retry_after=3.0)
    body = {"target": {"type": "device", "ids": [d]}, "notification": {"body": "b"}}
    sent = await push.ok("POST", "/v1/push/messages", body)
    await until(lambda: apns.failures_left == 0, 15)  # refused once: the sender waits 3 s to try again
    await push.ok("DELETE", f"/v1/push/messages/{sent['messageId']}")
    await asyncio.sleep(4.0)
    st = await push.ok("GET", f"/v1/push/messages/{sent['messageId']}")
    assert st["state"] == "Revoked" and st["counts"] == {"APNs.RateLimited": 1}
    assert arrived(apns)[token] == 0  # neither the message nor a replacement (the vendor never took it)


async def test_idempotency_and_the_documented_refusals(start_push: Callable[..., Push], apns: ApnsServer) -> None:
    push = start_push()
    d = "ios-" + uuid.uuid4().hex[:6]
    await push.register(d, "ios", brand="apple", tokens={"APNs": os.urandom(32).hex()})
    body = {"target": {"type": "device", "ids": [d]}, "notification": {"body": "once"}, "idempotencyKey": "order-42"}
    first = await push.call("POST", "/v1/push/messages", body)
    again = await push.call("POST", "/v1/push/messages", body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {"messageId": first.json()["messageId"], "state": "Accepted", "duplicate": True}
    await push.settled(first.json()["messageId"], done=1)
    await asyncio.sleep(0.5)
    assert len(apns.accepted) == 1  # sent once

    async def refused(status: int, code: str, body: Any, path: str = "/v1/push/messages", **kw: Any) -> None:
        r = await push.call("POST", path, body, **kw)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text

    note = {"body": "x"}
    await refused(404, "UnknownDevice", {"target": {"type": "device", "ids": [d, "ghost"]}, "notification": note})
    await refused(404, "UnboundUser", {"target": {"type": "user", "ids": ["nobody"]}, "notification": note})
    await refused(404, "UnknownAlias", {"target": {"type": "alias", "ids": ["nobody"]}, "notification": note})
    big = {"body": "x" * 4000, "data": {"k": "y" * 200}}
    await refused(413, "PayloadTooLarge", {"target": {"type": "device", "ids": [d]}, "notification": big})
    past = {"target": {"type": "device", "ids": [d]}, "notification": note, "scheduledAt": "2020-01-01T00:00:00Z"}
    await refused(400, "ScheduleInPast", past)
    await refused(400, "InvalidRequest", {"target": {"type": "device", "ids": ["a b"]}, "notification": note})
    await refused(400, "InvalidRequest", {"target": {"type": "everyone"}, "notification": note})
    await refused(400, "InvalidRequest", {"target": {"type": "device", "ids": [d]}, "notification": {"badge": "1"}})
    await refused(401, "SignatureInvalid", {"target": {"type": "all"}, "notification": note}, key=b"w" * 32)
    await refused(404, "TemplateMissing", {"target": {"type": "device", "ids": [d]}, "template": {"name": "nope"}})
    await push.ok("PUT", "/v1/push/templates/welcome", {"title": "Hi {{name}}", "body": "{{greeting}}!"})
    await refused(
        400,
        "TemplateVariableMissing",
        {"target": {"type": "device", "ids": [d]}, "template": {"name": "welcome", "variables": {"name": "Ann"}}},
    )
    ok = await push.ok(
        "POST",
        "/v1/push/messages",
        {
            "target": {"type": "device", "ids": [d]},
            "template": {"name": "welcome", "variables": {"name": "Ann", "greeting": "Hello"}},
        },
    )
    await push.settled(ok["messageId"], done=1)
    assert apns.accepted[-1].payload["aps"]["alert"] == {"title": "Hi Ann", "body": "Hello!"}
    # A replayed call (same nonce) and an unsigned one.
    raw = json.dumps({"target": {"type": "all"}, "notification": note}).encode()
    headers = sign_headers(SERVER_KEY, "POST", "/v1/push/messages", "", APP, WS, raw)
    async with httpx.AsyncClient() as http:
        first_call = await http.post(push.url + "/v1/push/messages", content=raw, headers=headers)
        assert first_call.status_code == 202
        replay = await http.post(push.url + "/v1/push/messages", content=raw, headers=headers)
        assert (replay.status_code, replay.json()["code"]) == (401, "NonceReplayed")
        bare = await http.post(push.url + "/v1/push/messages", content=raw)
        assert bare.status_code == 401
    await push.settled(first_call.json()["messageId"], done=1)
    # A batch is checked whole before any of it is accepted.
    before = len(apns.accepted)
    r = await push.call(
        "POST",
        "/v1/push/messages/batch",
        {"messages": [{"target": {"type": "device", "ids": [d]}, "notification": note},
                      {"target": {"type": "device", "ids": ["ghost"]}, "notification": note}]},
    )  # fmt: skip
    assert (r.status_code, r.json()["code"]) == (404, "UnknownDevice") and "messages[1]" in r.json()["message"]
    to_d = {"target": {"type": "device", "ids": [d]}, "notification": note}
    for kind, name, code in (("alias", "no-such-alias", "UnknownAlias"), ("user", "nobody", "UnboundUser")):
        bad = {"target": {"type": kind, "ids": [name]}, "notification": note}
        r = await push.call("POST", "/v1/push/messages/batch", {"messages": [to_d, to_d, bad]})
        assert (r.status_code, r.json()["code"]) == (404, code) and "messages[2]" in r.json()["message"]
    await asyncio.sleep(1.0)
    assert len(apns.accepted) == before
    # One template read for the batch, filled per send.
    hello = [{"target": {"type": "device", "ids": [d]}, "template": {"name": "welcome", "variables": v}}
             for v in ({"name": "Bo", "greeting": "Hej"}, {"name": "Cy", "greeting": "Hi"})]  # fmt: skip
    results = (await push.ok("POST", "/v1/push/messages/batch", {"messages": hello}))["results"]
    for result in results:
        await push.settled(result["messageId"], done=1)
    alerts = [a.payload["aps"]["alert"] for a in apns.accepted[before:]]
    assert sorted(a["title"] for a in alerts) == ["Hi Bo", "Hi Cy"]


async def test_a_dead_token_is_reported_pruned_and_posted(
    start_push: Callable[..., Push], apns: ApnsServer, folder: Path
) -> None:
    from aiohttp import web

    posted: list[dict[str, Any]] = []

    async def feedback(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/feedback", feedback)
    runner = web.AppRunner(receiver)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = folder / "push.yaml"
    docs = list(yaml.safe_load_all(config.read_text()))
    for doc in docs:
        if doc["kind"] == "PushChannel" and doc["metadata"]["name"] == "apns":
            doc["spec"]["feedbackUrl"] = f"http://127.0.0.1:{port}/feedback"
    config.write_text(yaml.safe_dump_all(docs))
    try:
        await dead_token_checks(start_push, apns)
        await until(lambda: bool(posted), 10)
    finally:
        await runner.cleanup()
    (post,) = posted  # gorush's feedback hook, with the channel and the reason
    assert post["appId"] == APP and post["channel"] == "APNs"
    assert [(f["deviceId"], f["reason"]) for f in post["failed"]] == [("x", "InvalidToken: Unregistered")]


async def dead_token_checks(start_push: Callable[..., Push], apns: ApnsServer) -> None:
    push = start_push()
    good, dead = os.urandom(32).hex(), os.urandom(32).hex()
    apns.unregister(dead)
    await push.register("g", "ios", brand="apple", tokens={"APNs": good}, tags=["vip"])
    await push.register("x", "ios", brand="apple", tokens={"APNs": dead}, tags=["vip"])
    sent = await push.ok(
        "POST", "/v1/push/messages", {"target": {"type": "tag", "ids": ["vip"]}, "notification": {"body": "b"}}
    )
    st = await push.settled(sent["messageId"], done=2)
    assert st["counts"] == {"APNs.Sent": 1, "APNs.InvalidToken": 1}
    (failed,) = st["failed"]
    assert (failed["deviceId"], failed["token"], failed["reason"]) == ("x", dead, "InvalidToken: Unregistered")
    device = await push.ok("GET", "/v1/push/devices/x")
    assert device["tokens"] == {}  # pruned


def add_channel(folder: Path, name: str, kind: str, url: str, extra: dict[str, Any], data: dict[str, str]) -> None:
    """A vendor PushChannel of the app, with its Secret, in the push process's config."""
    config = folder / "push.yaml"
    docs = list(yaml.safe_load_all(config.read_text()))
    spec = {"appId": APP, "type": kind, "endpoint": url, "credentialsSecretRef": {"name": f"{name}-creds"}}
    docs.append({"apiVersion": "mpaas.io/v1alpha1", "kind": "PushChannel",
                 "metadata": {"name": name, "namespace": "shop"}, "spec": spec | extra})  # fmt: skip
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-creds", "namespace": "shop"},
                 "data": encoded})  # fmt: skip
    config.write_text(yaml.safe_dump_all(docs))


async def test_a_recall_sends_nothing_where_the_vendor_cannot_replace_a_notification(
    start_push: Callable[..., Push], folder: Path
) -> None:
    from push_vendors.oppo import OppoServer

    oppo = OppoServer()
    await oppo.start()
    add_channel(folder, "oppo", "OPPO", oppo.url, {}, {"appKey": oppo.app_key, "masterSecret": oppo.master_secret})
    try:
        push = start_push()
        await push.register("op-1", brand="oppo", tokens={"OPPO": "CN_" + os.urandom(16).hex()})
        body = {"target": {"type": "device", "ids": ["op-1"]}, "notification": {"title": "t", "body": "b"}}
        sent = await push.ok("POST", "/v1/push/messages", body)
        assert (await push.settled(sent["messageId"], done=1))["counts"] == {"OPPO.Sent": 1}
        recalled = await push.ok("DELETE", f"/v1/push/messages/{sent['messageId']}")
        st = await push.settled(recalled["recallMessageId"], done=1)
        # Link keeps the notice for the app's next connection; OPPO is sent nothing.
        assert st["counts"] == {"Link.Sent": 1, "OPPO.NotRecallable": 1} and st["failed"] == []
        assert len(oppo.accepted) == 1
    finally:
        await oppo.stop()


async def test_vendor_receipts_count_deliveries_once_and_prune_dead_tokens(
    start_push: Callable[..., Push], folder: Path
) -> None:
    """Xiaomi (asked with each send) and Huawei (its console's address) post receipts to the push API: each
    device counted once however often they come, the token Xiaomi reports dead failed and pruned."""
    from push_vendors.huawei import HuaweiServer
    from push_vendors.xiaomi import XiaomiServer

    port, token = free_port(), "receipts-" + os.urandom(12).hex()
    mi, hw = XiaomiServer(), HuaweiServer({"104513725": "c0ffee5ecret"})
    await mi.start()
    await hw.start()
    hw.receipt_url = f"http://127.0.0.1:{port}/v1/push/receipts/shop/hw/{token}"
    receipts = {"receiptUrl": f"http://127.0.0.1:{port}"}
    add_channel(folder, "mi", "Xiaomi", mi.url, {"xiaomi": {"packageName": mi.package}} | receipts,
                {"appSecret": mi.app_secret, "receiptToken": token})  # fmt: skip
    add_channel(folder, "hw", "Huawei", hw.url, receipts,
                {"appId": "104513725", "appSecret": "c0ffee5ecret", "receiptToken": token})  # fmt: skip
    try:
        push = start_push(port=port)
        alive, dying, huawei = os.urandom(12).hex(), os.urandom(12).hex(), os.urandom(16).hex()
        mi.expire_later(dying)
        await push.register("mi-1", brand="xiaomi", tokens={"Xiaomi": alive}, tags=["r"])
        await push.register("mi-2", brand="xiaomi", tokens={"Xiaomi": dying}, tags=["r"])
        await push.register("hw-1", brand="huawei", tokens={"Huawei": huawei}, tags=["r"])
        sent = await push.ok(
            "POST",
            "/v1/push/messages",
            {"target": {"type": "tag", "ids": ["r"]}, "notification": {"title": "t", "body": "b"}},
        )
        st = await push.settled(sent["messageId"], done=3)
        assert {k: n for k, n in st["counts"].items() if k.endswith(".Sent")} == {"Xiaomi.Sent": 2, "Huawei.Sent": 1}
        (ask,) = {a.message["extra.callback"] for a in mi.accepted}  # Xiaomi was given the address
        assert ask == f"http://127.0.0.1:{port}/v1/push/receipts/shop/mi/{token}"
        await mi.receipts.drain()
        await hw.receipts.drain()
        assert [p.status for p in mi.receipts.posted + hw.receipts.posted] == [200, 200, 200]
        st = await push.ok("GET", f"/v1/push/messages/{sent['messageId']}")
        assert st["counts"] == {"Xiaomi.Sent": 2, "Huawei.Sent": 1, "Receipt.Delivered": 2, "Receipt.InvalidToken": 1}
        (failed,) = st["failed"]
        assert (failed["deviceId"], failed["token"]) == ("mi-2", dying) and "invalid target" in failed["reason"]
        assert (await push.ok("GET", "/v1/push/devices/mi-2"))["tokens"] == {}  # pruned
        # The same receipts again (a vendor retrying): counted once. The app reporting a device the vendor
        # reported: counted once too.
        for posted in (mi.receipts.posted[0], hw.receipts.posted[0]):
            again = await push.http.post(posted.url, content=posted.body, headers={"content-type": posted.content_type})
            assert again.status_code == 200, again.text
        await push.ok("POST", "/v1/push/receipts", {"messageId": sent["messageId"], "deviceId": "hw-1",
                                                    "event": "delivered"})  # fmt: skip
        st = await push.ok("GET", f"/v1/push/messages/{sent['messageId']}")
        assert st["counts"]["Receipt.Delivered"] == 2 and len(st["failed"]) == 1
        wrong = await push.http.post(hw.receipt_url[:-1] + "x", content=hw.receipts.posted[0].body)
        assert (wrong.status_code, wrong.json()["code"]) == (404, "UnknownChannel")
        bad = await push.http.post(hw.receipt_url, content=b'{"statuses": 5}')
        assert (bad.status_code, bad.json()["code"]) == (400, "InvalidRequest")
        # A recall replaces it where the vendors took it: the same notify_id (Xiaomi) and tag (Huawei); mi-2's
        # token was pruned, so it gets nothing.
        withdrawn = "recalledTitle=%E5%B7%B2%E6%92%A4%E5%9B%9E"  # 已撤回
        recalled = await push.ok("DELETE", f"/v1/push/messages/{sent['messageId']}?{withdrawn}")
        await until(lambda: len(mi.accepted) == 3 and len(hw.accepted) == 2, 15)
        first, replaced = mi.accepted[0].message, mi.accepted[2]
        assert replaced.token == alive and replaced.message["notify_id"] == first["notify_id"]
        assert replaced.message["title"] == "\u5df2\u64a4\u56de"
        assert replaced.message["description"] == "This message was recalled."
        tags = [a.message["android"]["notification"]["tag"] for a in hw.accepted]
        assert tags == [sent["messageId"]] * 2
        assert hw.accepted[1].message["android"]["notification"]["body"] == "This message was recalled."
        st = await push.settled(recalled["recallMessageId"], done=2)
        sent_counts = {k: n for k, n in st["counts"].items() if k.endswith(".Sent")}
        assert sent_counts == {"Link.Sent": 3, "Xiaomi.Sent": 1, "Huawei.Sent": 1}  # link: at their next connection
    finally:
        await mi.stop()
        await hw.stop()


async def test_a_scheduled_push_survives_a_restart_and_can_be_canceled(
    start_push: Callable[..., Push], apns: ApnsServer
) -> None:
    port = free_port()
    push = start_push(port=port)
    token = os.urandom(32).hex()
    await push.register("s", "ios", brand="apple", tokens={"APNs": token})
    at = int(time.time() * 1000) + 3000
    target = {"type": "device", "ids": ["s"]}
    kept = await push.ok(
        "POST", "/v1/push/messages", {"target": target, "notification": {"body": "later"}, "scheduledAt": at}
    )
    dropped = await push.ok(
        "POST", "/v1/push/messages", {"target": target, "notification": {"body": "never"}, "scheduledAt": at}
    )
    assert kept["state"] == "Scheduled"
    assert (await push.call("DELETE", f"/v1/push/messages/{dropped['messageId']}")).status_code == 200
    push.proc.proc.send_signal(signal.SIGKILL)
    push.proc.proc.wait(10)
    push = start_push(port=port, name="push-again")
    st = await push.settled(kept["messageId"], done=1, seconds=30)
    assert st["counts"] == {"APNs.Sent": 1}
    assert [a.payload["aps"]["alert"] for a in apns.accepted] == [{"body": "later"}]
    assert time.time() * 1000 >= at
    # Sent now: a DELETE recalls it (no longer a cancel), and a second one has nothing left to take back.
    recalled = await push.call("DELETE", f"/v1/push/messages/{kept['messageId']}")
    assert (recalled.status_code, recalled.json()["state"]) == (200, "Revoked")
    again = await push.call("DELETE", f"/v1/push/messages/{kept['messageId']}")
    assert (again.status_code, again.json()["code"]) == (409, "NotCancelable")


async def test_ttl_redelivery_on_reconnect_and_on_bind(
    start_push: Callable[..., Push], start_link: Callable[[], str]
) -> None:
    ws = start_link()
    push = start_push()
    old, new = "old-" + uuid.uuid4().hex[:6], "new-" + uuid.uuid4().hex[:6]
    await push.register(old, "android", brand="samsung")
    await push.ok("POST", "/v1/push/bind", {"userId": "bob", "deviceId": old})
    sent = await push.ok(
        "POST",
        "/v1/push/messages",
        {"target": {"type": "user", "ids": ["bob"]}, "notification": {"body": "while away"}, "ttlSeconds": 600},
    )
    await push.settled(sent["messageId"], done=1)
    client = device_client(ws, old)  # offline when sent: it arrives on reconnect
    await client.connect()
    try:
        assert [n["body"] for n in await notifications(client, 1)] == ["while away"]
    finally:
        await client.close()
    await push.register(new, "android", brand="samsung")
    bound = await push.ok("POST", "/v1/push/bind", {"userId": "bob", "deviceId": new})
    assert bound["redelivered"] == 1
    client = device_client(ws, new)
    await client.connect()
    try:
        (got,) = await notifications(client, 1)
        assert got["messageId"] == sent["messageId"]
    finally:
        await client.close()


async def test_gorush_requests_work_with_only_the_url_changed(
    start_push: Callable[..., Push], apns: ApnsServer
) -> None:
    push = start_push()
    host = push.url.removeprefix("http://")
    gorush = f"http://{APP}%2F{WS}:{SERVER_KEY.decode()}@{host}"  # Basic auth in the URL, as a gorush user's client
    good, dead = os.urandom(32).hex(), os.urandom(32).hex()
    apns.unregister(dead)
    # gorush's README example for iOS (platform 1), with sync mode to get the failed tokens back.
    body = {
        "notifications": [
            {"tokens": [good, dead], "platform": 1, "message": "Hello World iOS!", "title": "Gorush", "sync": True},
            {"tokens": ["fcm-token"], "platform": 2, "message": "Hello World Android!", "title": "Gorush"},
        ]
    }
    async with httpx.AsyncClient(timeout=40) as http:
        r = await http.post(gorush + "/api/push", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["counts"] == 3 and out["success"] == "ok"
        assert [(log["token"], log["type"], log["error"]) for log in out["logs"] if log["platform"] == "ios"] == [
            (dead, "failed-push", "InvalidToken: Unregistered")
        ]
        assert {a.token for a in apns.accepted} == {good}
        stat = (await http.get(gorush + "/api/stat/app")).json()
        assert stat["ios"] == {"push_success": 1, "push_error": 1} and stat["total_count"] >= 2
        bad = await http.post(f"http://{APP}%2F{WS}:wrong@{host}/api/push", json=body)
        assert bad.status_code == 401


async def test_a_push_process_killed_mid_broadcast_loses_nothing(
    start_push: Callable[..., Push], start_link: Callable[[], str], apns: ApnsServer
) -> None:
    """10 000 devices: 9 980 reachable only through APNs and 20 on link. kill -9 in the middle of the APNs sends;
    after a restart every device has the message: exactly once on link, and on APNs at least once, a send made
    again only among those in flight at the kill, each again with the same collapse id."""
    ws = start_link()
    port = free_port()
    push = start_push(port=port)
    apns_devices = {f"i{i:05d}": os.urandom(32).hex() for i in range(9980)}
    link_devices = [f"l{i:02d}" for i in range(20)]
    sem = asyncio.Semaphore(32)

    async def register(d: str, **kw: Any) -> None:
        async with sem:
            await push.register(d, **kw)

    await asyncio.gather(
        *(register(d, platform="ios", brand="apple", tokens={"APNs": t}) for d, t in apns_devices.items())
    )
    await asyncio.gather(*(register(d, platform="android", brand="samsung") for d in link_devices))
    t0 = time.monotonic()
    clients = [device_client(ws, d) for d in link_devices]
    for c in clients:
        await c.connect()
    try:
        # A filtered broadcast goes device by device (the per-device path the kill must not break).
        sent = await push.ok(
            "POST",
            "/v1/push/messages",
            {
                "target": {"type": "all", "filter": {"platforms": ["ios", "android"]}},
                "notification": {"body": "flash sale"},
            },
        )
        await until(lambda: len(apns.accepted) >= 2000, 120)
        push.proc.proc.send_signal(signal.SIGKILL)
        push.proc.proc.wait(10)
        in_flight_at_kill = len(apns.accepted)
        push = start_push(port=port, name="push-again")
        st = await push.settled(sent["messageId"], done=10_000, seconds=180)
        got = arrived(apns)
        assert set(got) == set(apns_devices.values())
        repeats = [t for t, n in got.items() if n > 1]
        assert all(n <= 2 for n in got.values())
        assert len(repeats) <= 32 * 16  # at most the groups one process has in flight (16 jobs x 32)
        for a in apns.accepted:
            assert a.headers["apns-collapse-id"] == sent["messageId"]
        for c in clients:
            (n,) = await notifications(c, 1)
            assert n["messageId"] == sent["messageId"]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.messages.get(), 0.2)
        # A page the fan-out did again after the kill is not counted again.
        assert st["counts"]["Link.Sent"] == 20 and st["targets"] == 10_000, st
        print(f"killed after {in_flight_at_kill} APNs sends; {len(repeats)} sent twice; {time.monotonic() - t0:.1f} s")
    finally:
        for c in clients:
            await c.close()
